"""Exports of a loaded `Stack` to other engines (specs/kubernetes-export.md).

`kubernetes.export(stack, options)` is a pure function from the model to manifest dicts plus
located warnings; `writer` turns those into deterministic YAML files. Nothing here touches a cluster.
"""
