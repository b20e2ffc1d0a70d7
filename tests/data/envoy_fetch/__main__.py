"""The stack's envoy-fetch command, its script on stdin and its environment as the JSON file the `command` setting
names holds them (as the program renders them), run by the command provider with `bash -s` here rather than in the
debugger container; its stdout (the report the stack parses) as an output."""

import json
from pathlib import Path

import pulumi
from pulumi_command import local

rendered = json.loads(Path(pulumi.Config().require("command")).read_text())
fetch = local.Command("envoy-fetch", create="bash -s", stdin=rendered["stdin"], environment=rendered["environment"])
pulumi.export("stdout", fetch.stdout)
