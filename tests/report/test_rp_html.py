"""report.html: Markdown → HTML by markdown-it-py with the figures inlined; the page opened in headless Chromium
loads every image and logs no console error (skipped, with the reason, where Chromium is not installed)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from spanet2.errors import DataError  # noqa: E402
from spanet2.report.study_report import markdown_to_html  # noqa: E402

REPORT_MD = """# SPANet2 study report

Some **bold**, *italic* and `code`; a <script>alert('x')</script> in the text stays text.

## Pairing efficiency by κλ

| pairing method | κλ = -5 | κλ = 1 |
|---|---|---|
| min-ΔR | 0.556 | 0.802 |
| mixing-κλ SPANet2 | 0.769 | 0.849 |

![Pairing efficiency vs κλ](figures/pairing.png)

*pairing: a caption.*

![Mass plane](figures/mass_plane.png)

```yaml
seed: 1
```
"""


def _figure(path: Path, colour: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.errorbar([-5, 1, 5], [0.5, 0.8, 0.4], yerr=0.02, fmt="o", color=colour)
    fig.savefig(path, dpi=50)
    plt.close(fig)


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture
def report(tmp_path) -> Path:
    _figure(tmp_path / "figures" / "pairing.png", "C0")
    _figure(tmp_path / "figures" / "mass_plane.png", "C1")
    page = tmp_path / "report.html"
    page.write_text(markdown_to_html(REPORT_MD, base=tmp_path))
    return page


def test_markdown_becomes_html_with_tables_and_inlined_images(report):
    text = report.read_text()
    parsed = _Collect()
    parsed.feed(text)
    tags = [t for t, _ in parsed.tags]
    assert tags.count("h1") == 1 and tags.count("h2") == 1 and tags.count("table") == 1
    assert tags.count("th") == 3 and tags.count("td") == 6 and tags.count("pre") == 1
    images = [a for t, a in parsed.tags if t == "img"]
    assert len(images) == 2 and all(a["src"].startswith("data:image/png;base64,") for a in images)
    assert images[0]["alt"] == "Pairing efficiency vs κλ"
    assert "script" not in tags and "&lt;script&gt;" in text  # raw HTML in the Markdown is not executed
    assert "<strong>bold</strong>" in text and "<em>italic</em>" in text and "<code>code</code>" in text


def test_a_missing_figure_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="figures/nope.png"):
        markdown_to_html("![x](figures/nope.png)\n", base=tmp_path)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


_CHECK = """<script>
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(e.message || ("failed to load " + e.target.tagName)), true);
window.addEventListener("load", () => {
  const images = [...document.images].map((i) => [i.complete, i.naturalWidth, i.naturalHeight]);
  document.body.setAttribute("data-check", JSON.stringify({images, errors: window.__errors}));
});
</script>"""


def test_report_html_in_headless_chromium_loads_every_image_without_console_errors(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (`make chromium-deps` installs it as root with apt)")
    page = tmp_path / "check.html"  # the report with a probe in <head> that records image loads and errors
    page.write_text(report.read_text().replace("<head>", "<head>" + _CHECK, 1))
    result = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'data-check="([^"]*)"', result.stdout)
    assert match, result.stdout[-2000:]
    check = json.loads(html.unescape(match.group(1)))
    assert len(check["images"]) == 2
    assert all(complete and width > 0 and height > 0 for complete, width, height in check["images"]), check
    assert check["errors"] == []
    # the page has no script of its own: any console message at all (Chromium logs them all at INFO) is a fault
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
