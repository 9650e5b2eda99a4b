"""pipelines.dead_letters end to end: corrupt records become dead letters, nothing is lost."""

from __future__ import annotations

import base64
import json

from pipelines import dead_letters


def test_dead_letters_job_scores_good_records_and_explains_bad_ones(tmp_path):
    result = dead_letters.run([f"--work_dir={tmp_path}"])
    predictions = sorted((tmp_path / "output.predictions").read_text().splitlines())
    assert predictions == [
        "input is [[1000.0]] output is [5000.0]",
        "input is [[1013.0]] output is [5065.0]",
        "input is [[105.0]] output is [525.0]",
        "input is [[108.0]] output is [540.0]",
    ]
    letters = [json.loads(line)
               for line in (tmp_path / "output.dead_letters").read_text().splitlines()]
    records = {base64.b64decode(letter["record_base64"]): letter for letter in letters}
    assert set(records) == set(dead_letters.bad_records())
    no_x, wrong_kind = dead_letters.bad_records()[3], dead_letters.bad_records()[2]
    assert records[no_x] == {
        "stage": "validate", "error_type": "InputError", "record_base64": base64.b64encode(
            no_x).decode(),
        "message": "feature 'x' is missing; signature 'serving_default' requires it (float, "
                   "1 value). Features found: y."}
    assert records[wrong_kind]["message"].startswith("feature 'x' holds int64 values")
    assert sorted(letter["stage"] for letter in letters) == [
        "decode", "decode", "validate", "validate"]
    assert result.state == "DONE"
