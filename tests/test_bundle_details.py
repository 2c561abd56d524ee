"""How `auxcli reproduce` words differences from the record, and the modes of the files auxcli writes."""

from __future__ import annotations

import json


def test_code_outside_a_git_checkout_reads_unknown_not_none(workdir):
    from auxcli.bundle.reproduce import differences

    recorded = workdir / "bundle/runs/t/seed-0"
    (recorded / "repro").mkdir(parents=True)
    environment = {"python": "3.11", "distributions": {}}
    (recorded / "repro/environment.json").write_text(json.dumps(environment))
    (recorded / "repro/code.json").write_text(json.dumps({"git_commit": "abc123", "git_dirty": False}))
    (recorded / "repro/data.json").write_text(json.dumps({"files": {}}))
    lines, _ = differences(recorded, environment, {"git_commit": None, "git_dirty": None}, {"files": {}})
    assert "runs/t/seed-0: code git_commit: recorded abc123, now unknown (not a git checkout)" in lines
    assert not any("None" in line for line in lines), lines


def test_bundles_and_results_are_readable_by_others_like_any_file_the_user_makes(workdir):
    import os

    from auxcli.bundle.archive import write_bundle
    from auxcli.runfolder import atomic_write_text

    previous = os.umask(0o022)
    try:
        write_bundle(workdir / "b.tar.gz", {"REPORT.md": b"# report\n"}, [])
        atomic_write_text(workdir / "results/summary.json", "{}\n")
        os.umask(0o077)
        atomic_write_text(workdir / "private.json", "{}\n")
    finally:
        os.umask(previous)
    assert (workdir / "b.tar.gz").stat().st_mode & 0o777 == 0o644
    assert (workdir / "results/summary.json").stat().st_mode & 0o777 == 0o644
    assert (workdir / "private.json").stat().st_mode & 0o777 == 0o600  # the user's umask decides
