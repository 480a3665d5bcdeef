"""autofix: run history, failure classification and cost-aware retries (docs/autofix.md).

``interface`` (the value types and ABCs), ``rules.yaml`` + ``classify`` (the rule-based
classifier), ``history`` (the JSON-lines run history), ``record`` (writing a step run),
``knobs`` (settings <-> config), ``model`` (P(success) and minutes from the history),
``optimize`` (candidates and the objective), ``remediate`` (the policy per class),
``retry`` (re-running with a recommendation), ``report`` (printing one).
"""
