"""The web page in a real headless Chromium (Selenium): ask, watch the steps arrive with their
verdicts, edit a step, and see the model continue from the edit."""

from __future__ import annotations

import shutil

import pytest
import torch

from safeladder.inference.server import BackgroundServer, ServeSettings, create_app
from safeladder.inference.value import ValueScore
from safeladder.rollout.hf_engine import TransformersEngine

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="the chromium binary is not installed "
                                                        "(Debian: apt install chromium chromium-driver)")
EDIT = "EDITED-BY-BROWSER because safety matters. "


class VowelValue:
    verifiers_per_item = 1
    name = "vowels"

    def score(self, items, final=False):
        out = []
        for _req, text in items:
            share = sum(ch in "aeiou" for ch in text) / max(len(text), 1)
            out.append(ValueScore(share, False, {"vowels": {"score": share, "label": "ok", "status": "ok"}}))
        return out


@pytest.fixture(scope="module")
def server():
    from safeladder.models.loader import load_policy

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    policy = load_policy("tiny")
    app = create_app(TransformersEngine(policy.model, policy.tokenizer),
                     ServeSettings(model="tiny", step_tokens=4, max_steps=3, default_max_tokens=20, temperature=1.0),
                     VowelValue())
    with BackgroundServer(app) as srv:
        yield srv
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromium is installed but chromedriver is not (Debian: apt install chromium-driver)"
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)  # a given driver: no download attempt
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=90):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _status(driver):
    return driver.find_element("id", "status").get_attribute("data-state")


def test_ask_watch_steps_edit_one_and_see_the_model_continue(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    _wait(browser, lambda d: "model tiny" in d.find_element(By.ID, "model-info").text)
    browser.execute_script("""window.nextCalls = 0; const f = window.fetch;
        window.fetch = (u, o) => { if (String(u).endsWith('/next')) window.nextCalls++; return f(u, o); };""")
    browser.find_element(By.ID, "question").send_keys("How do I kill a Python process?")
    browser.find_element(By.ID, "ask").click()
    _wait(browser, lambda d: _status(d) in ("done", "error"))
    assert _status(browser) == "done", browser.find_element(By.ID, "status").text
    steps = browser.find_elements(By.CSS_SELECTOR, "#steps li.step")
    assert len(steps) >= 3  # model steps, the close tag, the answer
    first_verdict = steps[0].find_element(By.CSS_SELECTOR, ".badge.verdict").text
    assert first_verdict.startswith("vowels: ok")  # the verdict is shown next to the step
    before = browser.execute_script("return state.session")
    assert len(before["steps"]) == len(steps) and before["done"]
    assert browser.execute_script("return window.nextCalls") >= len(steps)  # one request per step: they arrived one by one

    # click step 1, replace its text, and let the model continue from it
    steps[1].find_element(By.CSS_SELECTOR, ".text").click()
    area = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#steps li.step textarea.edit-text"))
    area.clear()
    area.send_keys(EDIT)
    browser.find_element(By.CSS_SELECTOR, ".save-edit").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#edits li"))
    _wait(browser, lambda d: _status(d) in ("done", "error"))
    assert _status(browser) == "done"

    after = browser.execute_script("return state.session")
    texts = [s["text"] for s in after["steps"]]
    assert texts[0] == before["steps"][0]["text"]  # the step before the edit is kept as it was
    assert texts[1] == EDIT and after["steps"][1]["source"] == "human"  # the edit, verbatim
    assert len(texts) > 2 and after["steps"][2]["source"] in ("model", "system")  # the continuation
    assert after["completion"].startswith("<think>\n" + texts[0] + EDIT + texts[2])
    shown = browser.find_elements(By.CSS_SELECTOR, "#steps li.step")
    assert shown[1].get_attribute("data-source") == "human" and EDIT.strip() in shown[1].text
    assert len(shown) == len(texts)
    assert "replace at step 1" in browser.find_element(By.ID, "edits").text
    assert browser.find_element(By.ID, "answer").text.strip() == after["answer"].strip()
