"""The sweep report over real sweeps: one Parquet file, figures, and a report.html that opens offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from emotion_probe.errors import ConfigError
from experiments.reports import report

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")

# Scripted agents for a negotiation that parses: one offer, an acceptance, a closing answer. The
# price depends on the job's seed (11 or 12), so each merged row can be traced back to its job.
SCRIPTED_CONF = {
    "salesperson/model/scripted_deal.yaml": """\
# @package salesperson.model
# A scripted salesperson: one offer with a prediction of the customer's emotions.
defaults:
  - /model/scripted@_here_
# The one offer.
responses:
  - '{"message": "A glossy acorn from the old oak, only $15!", "predicted_customer_emotions": {"love": 10, "joy": 60, "surprise": 30, "anger": 0, "sadness": 0, "fear": 0}}'
""",
    "customer/model/scripted_deal.yaml": """\
# @package customer.model
# A scripted customer; its script is CUSTOMER_SCRIPT, on the command line.
defaults:
  - /model/scripted@_here_
""",
    "model/scripted_probe.yaml": """\
# A scripted probe model: fixed log-probabilities for two wheel words.
defaults:
  - scripted
  - _self_
# log P(word) for every prompt.
continuation_logprobs: {" joy": -1.0, " fear": -2.0}
""",
}


# The customer accepts at 1<seed>, then says what it paid. A config folder's values are literal (no ${...}),
# so the script that interpolates the job's seed is an override of the command line, which may.
CUSTOMER_SCRIPT = ("""customer.model.responses=['{"message": "Deal at 1${seed}.", "my_emotions": {"love": 0, "joy": 50, """
                   """"surprise": 20, "anger": 0, "sadness": 0, "fear": 30}, "decision": "accept", "price": 1${seed}}',"""
                   """'{"paid": 1${seed}}']""")


def _emolab(*overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "experiments.app.main", *overrides],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def negotiation_sweep(tmp_path_factory) -> Path:
    """A real 2x2 multirun: customer persona x seed, scripted agents, with the report written inside it."""
    root = tmp_path_factory.mktemp("negotiation_sweep")
    for name, text in SCRIPTED_CONF.items():
        (root / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "conf" / name).write_text(text, encoding="utf-8")
    sweep = root / "sweep"
    _emolab("-m", "experiment=negotiation", "salesperson/model=scripted_deal", "customer/model=scripted_deal",
            CUSTOMER_SCRIPT, "model=scripted_probe", "customer/persona=bargain_hunter,collector", "seed=1,2", "progress=false",
            f"hydra.sweep.dir={sweep}", f"hydra.searchpath=[file://{root / 'conf'}]")
    result = _emolab("experiment=report", f"sweep_dir={sweep}", f"hydra.run.dir={sweep / 'report'}")
    assert str(sweep / "report" / "report.html") in result.stdout.replace("\n", "")
    return sweep


def test_report_merges_every_job_with_its_overrides(negotiation_sweep):
    out = negotiation_sweep / "report"
    results = pd.read_parquet(out / "results.parquet")
    # Four jobs, one trial each; the report's own run dir inside the sweep is not a job.
    assert sorted(results["job"]) == ["0", "1", "2", "3"]
    assert list(results.columns[:3]) == ["job", "experiment", "table"]
    assert set(results["experiment"]) == {"negotiation"} and set(results["table"]) == {"trials"}
    assert pd.crosstab(results["customer/persona"], results["seed"]).eq(1).all().all()
    assert set(results["customer/persona"]) == {"bargain_hunter", "collector"} and set(results["seed"]) == {1, 2}
    assert results["salesperson/model"].eq("scripted_deal").all()
    # Each row holds its own job's outcome: the scripted price is 1<seed>.
    assert (results["final_price"] == 10 + results["seed"]).all() and results["deal"].all()
    # The job's own seed column is kept beside the override of the same name.
    assert (results["seed_reported"] == results["seed"]).all()
    assert results.groupby("customer/persona")["final_price"].mean().to_dict() == {"bargain_hunter": 11.5,
                                                                                  "collector": 11.5}

    jobs = pd.read_csv(out / "jobs.csv", dtype={"job": str})
    assert list(jobs["job"]) == ["0", "1", "2", "3"] and set(jobs["status"]) == {"COMPLETED"}
    assert jobs["wall time (s)"].gt(0).all()
    assert {"customer/persona", "seed"} <= set(jobs.columns)
    for figure in ("price_by_condition", "deal_rate_by_condition", "error_vs_price", "error_vs_price_by_model"):
        assert (out / "negotiation" / f"{figure}.png").stat().st_size > 5000


class _Page(HTMLParser):
    """Every tag's attributes, headings and scripts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts = 0
        self.headings: list[str] = []
        self.images = 0
        self.details = 0
        self._heading = False

    def handle_starttag(self, tag, attrs):
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "srcset", "data", "action")]
        self.scripts += tag == "script"
        self.images += tag == "img"
        self.details += tag == "details"
        self._heading = tag == "h2"

    def handle_data(self, data):
        if self._heading:
            self.headings.append(data.strip())
            self._heading = False


def test_report_html_is_one_self_contained_file(negotiation_sweep):
    html = (negotiation_sweep / "report" / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    assert page.scripts == 0
    assert page.urls and all(url.startswith(("data:", "#")) for url in page.urls), page.urls
    assert "default-src 'none'" in html
    assert page.headings == ["Jobs", "Negotiation", "Manifests"]
    # Four figures across jobs, one emotions figure per job, one manifest per job plus the sweep's.
    assert page.images == 4 + 4 and page.details == 1 + 4
    assert "customer/persona=collector" in html and "command_overrides" in html


def test_report_html_opens_in_headless_chromium_without_errors(negotiation_sweep):
    if not CHROMEDRIVER.is_file():
        pytest.skip(f"chromium-driver is not installed ({CHROMEDRIVER}); CI installs it")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    if CHROMIUM.is_file():
        options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # An explicit driver path: Selenium Manager never runs, so nothing is downloaded.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(60)
        page = (negotiation_sweep / "report" / "report.html").resolve().as_uri()
        driver.get(page)
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []
        widths = driver.execute_script("return Array.from(document.images).map(image => image.naturalWidth)")
        assert len(widths) == 4 + 4 and all(width > 0 for width in widths)  # as in the test above
        headings = driver.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        assert headings == ["Jobs", "Negotiation", "Manifests"]
        # Every request the page made, blocked or not, and every resource it loaded, stayed in the file.
        requested = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requested if m["method"] == "Network.requestWillBeSent"]
        urls += driver.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
        assert page in urls and all(url.startswith(("data:", "file:")) for url in urls), urls
    finally:
        driver.quit()


def _run_report(sweep_dir: Path, out_dir: Path, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=report", f"sweep_dir={sweep_dir}",
                                                       f"paths.output_dir={out_dir}", *overrides])
    return report.run(cfg)


def test_bad_files_are_reported_by_file_and_field(negotiation_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(negotiation_sweep, sweep, ignore=shutil.ignore_patterns("report"))

    def refused(path: Path, content: str | bytes, message: str) -> None:
        original = path.read_bytes()
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: {message}"):
            _run_report(sweep, tmp_path / "out")
        path.write_bytes(original)

    summary = json.loads((sweep / "1" / "summary.json").read_text())
    refused(sweep / "1" / "summary.json", json.dumps({**summary, "deals": "many"}),
            "deals: Input should be a valid integer")
    manifest = json.loads((sweep / "2" / "manifest.json").read_text())
    refused(sweep / "2" / "manifest.json", json.dumps({**manifest, "config": "a string"}),
            "config: Input should be a valid dictionary")
    refused(sweep / "2" / "manifest.json", "{truncated", "not valid JSON")
    refused(sweep / "3" / "trials.parquet", b"PAR1 but not really", "not a readable Parquet file")
    sweep_manifest = json.loads((sweep / "manifest.json").read_text())
    refused(sweep / "manifest.json", json.dumps({**sweep_manifest, "jobs": [{"dir": "0"}]}),
            "jobs.0.status: Field required")

    # With every file intact again, a job the sweep manifest lists but that is gone from disk is still shown.
    shutil.rmtree(sweep / "2")
    results = _run_report(sweep, tmp_path / "out")
    assert sorted(results["job"]) == ["0", "1", "3"]
    jobs = pd.read_csv(tmp_path / "out" / "jobs.csv", dtype={"job": str}).set_index("job")
    assert jobs.loc["2", "status"] == "COMPLETED (dir missing)" and jobs.loc["2", "customer/persona"] == "collector"


def test_sweep_dir_is_required_and_must_hold_jobs(tmp_path):
    with pytest.raises(ConfigError, match="^sweep_dir: required"):
        with initialize_config_module(config_module="conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=["experiment=report", f"paths.output_dir={tmp_path}"])
        report.run(cfg)
    with pytest.raises(ConfigError, match="is not a directory"):
        _run_report(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="^sweep_dir: no job dirs"):
        _run_report(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match="^max_trial_figures: Input should be greater than or equal to 0"):
        _run_report(tmp_path / "empty", tmp_path / "out", "max_trial_figures=-1")


@pytest.mark.embedded
def test_report_over_persona_and_hierarchy_jobs(tmp_path):
    """Persona bias and hierarchy jobs on the random-init model (it reads the converted tokenizer)."""
    sweep = tmp_path / "sweep"
    _emolab("-m", "experiment=persona_bias", "model=smollm2_random", "limit=12", "persona=male,female",
            "progress=false", f"hydra.sweep.dir={sweep / 'persona'}")
    _emolab("experiment=hierarchy", "model=smollm2_random", "limit=20", "hierarchy.threshold=0.02", "progress=false",
            f"hydra.run.dir={sweep / 'hierarchy'}")
    out = tmp_path / "report"
    _emolab("experiment=report", f"sweep_dir={sweep}", "max_probability_cells=0", f"hydra.run.dir={out}")

    results = pd.read_parquet(out / "results.parquet")
    counts = results.groupby(["experiment", "table"]).size().to_dict()
    assert counts == {("persona_bias", "predictions"): 24, ("persona_bias", "metrics"): 2, ("hierarchy", "metrics"): 1}
    assert set(results.loc[results["experiment"] == "persona_bias", "persona"]) == {"male", "female"}
    # max_probability_cells=0 keeps the 135 per-word columns out; the predictions stay.
    assert "joy" not in results.columns and results["predicted"].notna().sum() == 24
    assert (out / "persona_bias" / "compare_male_vs_female.csv").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    for text in ("<h2>Persona bias</h2>", "<h2>Hierarchy</h2>", "Confusion over primaries: male",
                 "male vs female (calibrated): more often predicted for female", "Emotion trees"):
        assert text in html
