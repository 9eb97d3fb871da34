#!/usr/bin/env python3
"""Validates Kubernetes manifests offline, strictly, and never skips a kind.

Usage: validate.py [--kubernetes-version V]... [--json-out FILE] FILE...
       (FILE "-" reads standard input, e.g. `helm template ... | validate.py -`)

- Built-in kinds: against the Kubernetes OpenAPI schemas that the PyPI package
  kubernetes-validate ships (no network), in its strict mode: unknown fields
  are errors. Each --kubernetes-version is checked (default: 1.30 and 1.37,
  the oldest the chart supports and the newest the package knows).
- KafkaTopic (kafka.strimzi.io/v1beta2): against KAFKA_TOPIC below, the
  fields of Strimzi's KafkaTopic spec, written down here because
  kubernetes-validate has no CRD schemas; unknown spec fields are errors too,
  and the strimzi.io/cluster label the topic operator selects on is required.
- Any other kind: an error (no schema: not "valid").
- YAML with a duplicate mapping key is an error (PyYAML would keep the last).

Exit status 0 when every document is valid, 1 otherwise; one line per
problem, `FILE: KIND/NAME: message`. --json-out writes every document as a
JSON list, for the Rust tests to inspect what was validated.
"""

import argparse
import json
import sys

import jsonschema
import kubernetes_validate
import yaml

DEFAULT_VERSIONS = ["1.30.0", "1.37.0"]

# Strimzi KafkaTopic, API version kafka.strimzi.io/v1beta2: spec fields and
# their bounds as the Strimzi documentation gives them.
KAFKA_TOPIC = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaTopic"},
        "metadata": {
            "type": "object",
            "required": ["name", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string"},
                "labels": {
                    "type": "object",
                    "required": ["strimzi.io/cluster"],
                    "additionalProperties": {"type": "string"},
                },
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {"type": "object"},
                "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
            },
        },
    },
}


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def name_of(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def problems(doc, versions):
    """Every problem of one document (empty: valid)."""
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        return ["not a Kubernetes object (no kind or apiVersion)"]
    if doc["kind"] == "KafkaTopic":
        validator = jsonschema.Draft202012Validator(KAFKA_TOPIC)
        return [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message} (Strimzi KafkaTopic)"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
        ]
    found = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as e:
            found.append(f"no schema: {e.message}")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "<root>"
            found.append(f"{path}: {e.message} (Kubernetes {e.version})")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", action="append", dest="versions")
    parser.add_argument("--json-out")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    versions = args.versions or DEFAULT_VERSIONS

    failed = False
    all_docs = []
    counts = {}
    for filename in args.files:
        text = sys.stdin.read() if filename == "-" else open(filename, encoding="utf-8").read()
        try:
            docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
        except yaml.YAMLError as e:
            print(f"{filename}: invalid YAML: {e}".replace("\n", " "))
            failed = True
            continue
        if not docs:
            print(f"{filename}: no Kubernetes objects")
            failed = True
        for doc in docs:
            all_docs.append(doc)
            for problem in problems(doc, versions):
                print(f"{filename}: {name_of(doc)}: {problem}")
                failed = True
            if isinstance(doc, dict):
                counts[doc.get("kind", "?")] = counts.get(doc.get("kind", "?"), 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    verdict = "INVALID" if failed else "valid"
    print(f"{verdict}: {len(all_docs)} objects ({summary}) against Kubernetes {', '.join(versions)}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as out:
            json.dump(all_docs, out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
