"""Every finding is one member of one vocabulary (probe.model.records.Finding), and the
evidence in words (probe.analysis.explain) has a sentence for each."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from probe.analysis.explain import SENTENCES, sentence
from probe.model.records import Evidence, Finding, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_every_finding_has_its_sentence_and_every_sentence_a_finding():
    assert set(SENTENCES) == set(Finding)
    for finding in Finding:
        text = sentence(Evidence(finding, "http", {}, {}))
        assert isinstance(text, str) and text.strip(), finding


def test_the_analysis_names_findings_only_from_the_vocabulary():
    bare = []
    for path in sorted((ROOT / "probe" / "analysis").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None))
                in ("Evidence", "inconsistent")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                bare.append(f"{path.name}:{node.lineno} {node.args[0].value!r}")
    assert bare == []


def test_a_finding_is_stored_and_read_back_as_its_plain_name():
    evidence = Evidence(Finding.DNS_INJECTED, "dns", {"addresses": ["192.0.2.1"]}, {})
    stored = json.loads(json.dumps(to_dict(evidence)))
    assert stored["finding"] == "dns_injected"
    assert Evidence.from_dict(stored).finding == Finding.DNS_INJECTED


def test_every_blocking_method_has_a_name_and_a_colour_in_reports():
    from probe.model.records import BLOCKINGS
    from probe.report.wording import METHOD_COLOURS, METHOD_NAMES

    for method in BLOCKINGS:
        assert METHOD_NAMES.get(method) and METHOD_COLOURS.get(method), method
