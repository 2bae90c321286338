"""The dashboard in a real headless Chromium (Debian ``chromium``, driven by Playwright).

Each test serves a real app over a real engine and queue worker (SQLite) on a free port and
drives the page as a person would. Screenshots land in ``artifacts/screenshots/``.

Without ``/usr/bin/chromium`` the tests are skipped with a message, or fail when ``CI=true``
(``make test`` installs it: ``apt-get install -y chromium``). Playwright's own browser
downloads are never used.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import CHAIN, GATE, HELLO, live_server, steerable_tools
from trellis.api import ApiSettings, create_app
from trellis.config import Settings
from trellis.queue import Worker
from trellis.registry import Registry
from trellis.runtime import Engine

CHROMIUM = os.environ.get("TRELLIS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).parents[1] / "artifacts" / "screenshots"
TIMEOUT_MS = 10_000

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a dev dependency")
expect = playwright_api.expect


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium executable; skip without it (fail on CI, where `make test` installs it)."""
    if Path(CHROMIUM).is_file() or shutil.which(CHROMIUM):
        return CHROMIUM
    message = (
        f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` (make test does)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def tools() -> Registry:
    return steerable_tools()


@pytest.fixture
async def server(tmp_path: Path, tools: Registry) -> AsyncIterator[str]:
    """A live API + dashboard on SQLite with a queue worker, at a free loopback port."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}")
    async with Engine.open(settings, registry=tools) as engine:
        app = create_app(engine, settings=ApiSettings(keep_alive_seconds=0.5, stream_poll_seconds=0.2))
        worker = Worker(engine, concurrency=4, poll_seconds=0.05)
        task = asyncio.create_task(worker.run(grace_seconds=1))
        try:
            async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
                for definition in (HELLO, CHAIN, GATE):
                    response = await client.post(
                        "/v1/workflows", content=definition, headers={"Content-Type": "application/yaml"}
                    )
                    assert response.status_code == 201, response.text
                yield url
        finally:
            tools.release.set()  # type: ignore[attr-defined]
            worker.request_stop()
            await asyncio.wait_for(task, 15)


@pytest.fixture
async def page(chromium: str) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            opened = await context.new_page()
            opened.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            opened.on("pageerror", lambda exc: errors.append(str(exc)))
            yield opened
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            await browser.close()


async def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def start_run(server: str, workflow: str, run_input: dict[str, Any] | None = None) -> str:
    async with httpx.AsyncClient(base_url=server) as client:
        response = await client.post("/v1/runs", json={"workflow": workflow, "input": run_input or {}})
        assert response.status_code == 201, response.text
        run_id: str = response.json()["id"]
        return run_id


async def wait_status(server: str, run_id: str, *statuses: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server) as client, asyncio.timeout(10):
        while True:
            run: dict[str, Any] = (await client.get(f"/v1/runs/{run_id}")).json()
            if run["status"] in statuses:
                return run
            await asyncio.sleep(0.05)


def node(page: Any, node_id: str) -> Any:
    return page.locator(f'svg.graph g.node[data-node="{node_id}"]')


class TestRunPage:
    async def test_a_run_started_from_the_page_turns_its_nodes_green_live(
        self, server: str, page: Any, tools: Registry
    ) -> None:
        """Started with "New run"; `hold` blocks, then finishes: colours change without a reload."""
        await page.goto(f"{server}/#/runs")
        await page.get_by_text("New run").click()
        await page.select_option("select[name=start-workflow]", "chain")
        await page.click("[data-action=start]")
        await expect(page.locator("[data-testid=run-status]")).to_have_text("running")
        await page.evaluate("window.__sameDocument = true")
        await expect(node(page, "a")).to_have_attribute("data-status", "succeeded")
        await expect(node(page, "hold")).to_have_attribute("data-status", "running")
        await expect(node(page, "c")).to_have_attribute("data-status", "pending")
        await shot(page, "run-live-holding")
        tools.release.set()  # type: ignore[attr-defined]
        await expect(node(page, "c")).to_have_attribute("data-status", "succeeded")
        await expect(node(page, "hold")).to_have_attribute("data-status", "succeeded")
        await expect(page.locator("[data-testid=run-status]")).to_have_text("succeeded")
        await expect(page.locator("[data-testid=timeline] li[data-type='run.succeeded']")).to_have_count(1)
        assert await page.evaluate("window.__sameDocument") is True  # never reloaded
        await shot(page, "run-live-succeeded")

    async def test_approving_a_gate_from_the_page_finishes_the_run(self, server: str, page: Any) -> None:
        run_id = await start_run(server, "gate")
        await wait_status(server, run_id, "waiting")
        await page.goto(f"{server}/#/runs/{run_id}")
        await expect(node(page, "approve")).to_have_attribute("data-status", "waiting")
        await expect(page.locator("[data-testid=approval]")).to_contain_text("Ship it?")
        await page.fill("[data-testid=approval-comment]", "looks good")
        await shot(page, "approval-waiting")
        await page.click("[data-testid=approval] [data-action=approve]")
        await expect(page.locator("[data-testid=run-status]")).to_have_text("succeeded")
        await expect(node(page, "finish")).to_have_attribute("data-status", "succeeded")
        await expect(page.locator("[data-testid=approval]")).to_have_count(0)
        run = await wait_status(server, run_id, "succeeded")
        assert run["output"]["decision"]["approved"] is True
        assert run["output"]["decision"]["comment"] == "looks good"
        await shot(page, "approval-approved")

    async def test_cancelling_from_the_page_cancels_the_running_node(self, server: str, page: Any) -> None:
        run_id = await start_run(server, "chain")
        await page.goto(f"{server}/#/runs/{run_id}")
        await expect(node(page, "hold")).to_have_attribute("data-status", "running")
        await page.click("[data-action=cancel]")
        await expect(page.locator("[data-testid=run-status]")).to_have_text("cancelled")
        await expect(node(page, "hold")).to_have_attribute("data-status", "cancelled")
        await expect(page.locator("[data-action=cancel]")).to_be_disabled()
        assert (await wait_status(server, run_id, "cancelled"))["status"] == "cancelled"
        await shot(page, "run-cancelled")

    async def test_two_state_versions_can_be_compared(self, server: str, page: Any) -> None:
        run_id = await start_run(server, "hello", {"name": "Ada"})
        await wait_status(server, run_id, "succeeded")
        await page.goto(f"{server}/#/runs/{run_id}")
        await page.click("[data-tab=versions]")
        rows = page.locator("table.versions tbody tr")
        await expect(rows.first).to_be_visible()
        count = await rows.count()
        assert count >= 3
        await rows.nth(count - 1).locator("input[name=diff-a]").check()  # the oldest: empty state
        await rows.nth(0).locator("input[name=diff-b]").check()  # the newest: greeting set
        await page.click("[data-action=diff]")
        result = page.locator("[data-testid=diff-result]")
        await expect(result).to_contain_text("/greeting")
        await expect(result).to_contain_text("hello Ada")
        await shot(page, "state-diff")

    async def test_the_nodes_tab_shows_what_each_node_ran_on_and_produced(
        self, server: str, page: Any
    ) -> None:
        run_id = await start_run(server, "hello", {"name": "Ada"})
        await wait_status(server, run_id, "succeeded")
        await page.goto(f"{server}/#/runs/{run_id}")
        await page.click("[data-tab=nodes]")
        row = page.locator("tr[data-node]").first
        await expect(row).to_contain_text("input (the state it ran on)")
        await row.locator("summary", has_text="input").click()
        await expect(row).to_contain_text("Ada")
        await row.locator("summary", has_text="output").click()
        await expect(row).to_contain_text("hello Ada")
        await shot(page, "run-nodes")


class TestListPages:
    async def test_every_page_renders_without_errors(self, server: str, page: Any) -> None:
        run_id = await start_run(server, "hello", {"name": "Grace"})
        await wait_status(server, run_id, "succeeded")
        await page.goto(f"{server}/#/runs")
        await expect(page.locator(f"[data-testid=runs] tr[data-run='{run_id}']")).to_contain_text("succeeded")
        await page.select_option("select[name=status]", "failed")
        await expect(page.locator("[data-testid=runs]")).to_contain_text("No runs.")
        for route, text in [
            ("#/workflows", "chain"),
            ("#/workflows/hello", "Last 7 days"),
            ("#/analytics", "hello"),
            ("#/queue", "Workers"),
            ("#/agents", "Agents"),
            ("#/breakers", "Circuit breakers"),
        ]:
            await page.goto(f"{server}/{route}")
            await expect(page.locator("main")).to_contain_text(text)
        await page.goto(f"{server}/#/workflows/chain")
        await expect(node(page, "hold")).to_be_visible()
        await shot(page, "workflow-graph")
