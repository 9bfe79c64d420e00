"""Reading benchmark data from the hub when it is out of reach: one line naming data_dir, within seconds."""

import os
import subprocess
import sys

import pytest

LOAD = ("import time\n"
        "from lowbit.errors import UsageError\n"
        "from lowbit.tasks import make_task\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    make_task('math500').load(None)\n"
        "except UsageError as e:\n"
        "    print(f'{time.monotonic() - start:.2f}|{e}')\n")


@pytest.mark.parametrize("hub_env", [{"HF_HUB_OFFLINE": "1"},
                                     {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable-endpoint"])
def test_a_hub_dataset_out_of_reach_fails_in_seconds_naming_data_dir(hub_env, tmp_path):
    env = {**os.environ, **hub_env, "HF_HOME": str(tmp_path)}  # an empty hub cache
    result = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, env=env, timeout=120)
    seconds, _, message = result.stdout.strip().partition("|")
    assert message, result.stderr
    assert float(seconds) < 5, message
    assert "could not load HuggingFaceH4/MATH-500" in message and "pass data_dir=<folder with test.jsonl>" in message
    assert result.stderr.strip() == ""  # no retried requests logged on the way
