"""The app as an agent tool (`python app.py --mcp`): Gradio's MCP server on 127.0.0.1, driven by the real MCP
client (the `mcp` package; requirements-mcp.txt). The named endpoints are the tools, described by their docstrings;
UI events are not tools."""

import asyncio
import base64
import contextlib
import importlib.util
import json

import pytest

import app
from benchmarks.app_harness import HOST, free_port, write_image, write_model

TOOLS = {"counterfactual", "generate", "landscape", "attribute"}


@contextlib.contextmanager
def mcp_app(tmp_path):
    demo = app.build_demo(str(write_model(tmp_path / "model")), standard_model=None)
    demo.launch(prevent_thread_lock=True, server_name=HOST, server_port=free_port(), quiet=True, mcp_server=True)
    try:
        yield demo.local_url.rstrip("/") + "/gradio_api/mcp/"
    finally:
        demo.close()


async def session_calls(url: str, calls: list[tuple[str, dict]]) -> tuple[list, list]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools
        results = [await session.call_tool(name, arguments) for name, arguments in calls]
    return tools, results


def test_the_named_endpoints_are_mcp_tools_an_agent_can_call(tmp_path):
    pytest.importorskip("mcp", reason="the MCP client is an optional extra: pip install -r requirements-mcp.txt")
    image = write_image(tmp_path / "photo.png")
    data_uri = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    calls = [("counterfactual", {"image": data_uri, "target": "cat", "eps": "3", "steps": 3, "step_size": 0.1}),
             ("counterfactual", {"image": data_uri, "target": "no such class", "steps": 3})]
    with mcp_app(tmp_path) as url:
        tools, (answer, refused) = asyncio.run(session_calls(url, calls))
    by_name = {t.name: t for t in tools}
    assert set(by_name) == TOOLS  # the UI's private events are not tools
    cf = by_name["counterfactual"]
    assert "Counterfactual explanation" in cf.description and "Returns:" in cf.description
    props = cf.inputSchema["properties"]
    assert set(props) == {"image", "target", "eps", "steps", "step_size"}
    assert "8/255" in props["eps"]["description"] and "second most likely" in props["target"]["description"]
    assert all(props[p]["description"] for p in props)  # every input described from the docstring's Args
    assert "comma-separated" in by_name["attribute"].inputSchema["properties"]["methods"]["description"]
    assert not answer.isError
    text = " ".join(c.text for c in answer.content if c.type == "text")
    assert "'target': 3" in text and "'target_name': 'cat'" in text
    assert refused.isError and "no such class" in json.dumps([c.model_dump() for c in refused.content]).lower()


def test_mcp_without_the_package_is_one_message(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mcp" else real(name, *a))
    assert app.main(["--mcp"]) == 2
    assert "requirements-mcp.txt" in capsys.readouterr().err
