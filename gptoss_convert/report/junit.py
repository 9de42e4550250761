"""JUnit XML: one test case per layer and component, plus embedding, final_norm and logits. A case fails exactly
when the gate's verdict lists a failure for its (layer, component)."""

import xml.etree.ElementTree as ET

from gptoss_convert.gate import COMPONENTS
from gptoss_convert.report.view import decibels, fraction, num, position, ratio, short_type, where

NOT_PROVIDED = None  # a case whose text is None is written as skipped: "not provided by the candidate"


def _metrics_text(metrics: dict | None, window=None) -> str | None:
    if metrics is None:
        return NOT_PROVIDED
    return (f"max |diff| {num(metrics['max_abs'])} at {where(metrics)}; mean |diff| {num(metrics['mean_abs'])}; "
            f"rel L2 {num(metrics['rel_l2'])}; NMSE dB {decibels(metrics['nmse_db'])}; "
            f"tolerance ratio {ratio(metrics['tolerance_ratio'])}; first failing position "
            f"{position(metrics.get('first_over'), window)}")


def _router_text(router: dict | None, window=None) -> str | None:
    if router is None:
        return NOT_PROVIDED
    return (f"{router['same_set']}/{router['tokens']} tokens with the same expert set, {router['near_tie']} near-ties, "
            f"{router['mismatched']} mismatched (near-tie eps {num(router['eps'])}); first mismatch "
            f"{position(router.get('first_mismatch'), window)}")


def _cases(report: dict) -> list[tuple]:
    """(classname, name, text, failures) for every case; failures of no known case get a case of their own."""
    by_case: dict = {}
    for failure in report["verdict"]["failures"]:
        by_case.setdefault((failure["layer"], failure["component"]), []).append(failure)
    width = max(2, len(str(max((layer["index"] for layer in report["layers"]), default=0))))
    window = report.get("sliding_window")
    cases = []
    for layer in report["layers"]:
        classname = f"verify.layer_{layer['index']:0{width}d}_{short_type(layer['attention_type'])}"
        column = "isolated" if layer["isolated"] or not layer.get("accumulated") else "accumulated"
        for component in COMPONENTS:
            if component == "expert_indices":
                text = _router_text(layer["router"].get(column), window)
            else:
                text = _metrics_text(layer[column].get(component), window)
            cases.append((classname, component, text, by_case.pop((layer["index"], component), [])))
    for name in ("embedding", "final_norm", "head", "logits"):
        text = _metrics_text(report.get(name))
        if name == "logits" and text:
            logits = report["logits"]
            text += (f"; KL mean {num(logits['kl_mean'])}, max {num(logits['kl_max'])}; top-1 "
                     f"{fraction(logits['top1_agreement'])}; top-5 {fraction(logits['top5_overlap'])}")
        cases.append(("verify.model", name, text, by_case.pop((None, name), [])))
    for (layer, component), failures in by_case.items():  # failures of no known case are never dropped
        cases.append(("verify.model" if layer is None else f"verify.layer_{layer:0{width}d}", component, "", failures))
    return cases


def junit(report: dict) -> str:
    cases = _cases(report)
    seconds = f"{float(report['timing']['seconds']):.3f}"
    failed = sum(1 for case in cases if case[3])
    skipped = sum(1 for case in cases if not case[3] and case[2] is NOT_PROVIDED)
    root = ET.Element("testsuites", name="gptoss-convert verify", tests=str(len(cases)), failures=str(failed),
                      errors="0", time=seconds)
    suite = ET.SubElement(root, "testsuite", name=f"gptoss-convert verify ({report['dtype']}, {report['device']})",
                          tests=str(len(cases)), failures=str(failed), errors="0", skipped=str(skipped), time=seconds)
    properties = ET.SubElement(suite, "properties")
    for key, value in (("candidate", report["candidate"]["name"]), ("candidate.version", report["candidate"]["version"]),
                       ("candidate.source", report["candidate"]["source"]), ("reference", report["reference"]["name"]),
                       ("reference.version", report["reference"]["version"]),
                       ("reference.source", report["reference"]["source"]),
                       ("baseline", (report.get("baseline") or {}).get("path")),
                       ("checkpoint", report["checkpoint"]["path"]), ("layout", report["checkpoint"]["layout"]),
                       ("dtype", report["dtype"]), ("device", report["device"]), ("atol", report["atol"]),
                       ("rtol", report["rtol"]), ("max_kl", report["max_kl"]), ("min_top1", report["min_top1"]),
                       *((f"version.{k}", v) for k, v in report["versions"].items())):
        ET.SubElement(properties, "property", name=key, value="" if value is None else str(value))
    for classname, name, text, failures in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name)
        if failures:
            failure = ET.SubElement(case, "failure", message=failures[0]["message"], type=failures[0]["metric"])
            failure.text = "\n".join(f["message"] for f in failures) + ("\n" + text if text else "")
        elif text is NOT_PROVIDED:
            ET.SubElement(case, "skipped", message="not provided by the candidate")
        if text:
            ET.SubElement(case, "system-out").text = text
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
