"""S10 without copy and paste, on the developer host: puts the stack's launch configurations into
`LAUNCH_FILE` (`workDir/work/.vscode/launch.json`, the file VS Code reads when it opens /work in the debugger
container) and keeps every other configuration of the developer's in it.

    python3 -c "<this file>" write      (pulumi up)      python3 -c "<this file>" restore    (pulumi destroy)

`write` merges by name: the configurations this stack wrote before and those named like the new ones are
replaced, the rest stay in their order. The file VS Code makes has comments and trailing commas (JSONC): they
are read; the file is written back as plain JSON. The first write keeps the original, byte for byte, in a
state file beside it (`.istio-proxy-debug-launch.json`, with the names written).
`restore` takes the stack's configurations out again: if nothing else in the file changed since the first
write, the original comes back byte for byte (or the file goes, if there was none); if the developer changed it
since, their changes stay and only the stack's configurations are swapped back for the originals of the same name.
A file that cannot be read is never overwritten: the command fails and says why.
"""

import json
import os
import sys

STATE_NAME = ".istio-proxy-debug-launch.json"


def strip_jsonc(text):
    """JSON from JSONC: comments and trailing commas removed, strings untouched."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c in "}]":
            while out and out[-1].isspace():
                out.pop()
            if out and out[-1] == ",":
                out.pop()
            out.append(c)
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def read_launch(path):
    if not os.path.exists(path):
        return None, None
    with open(path, "rb") as f:
        raw = f.read()
    try:
        document = json.loads(strip_jsonc(raw.decode("utf-8"))) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError) as error:
        sys.exit(f"launch-json-file: {path} is not a launch.json that can be read ({error}); fix or move it, "
                 "then run pulumi up again (it was left as it is)")
    if not isinstance(document, dict) or not isinstance(document.get("configurations", []), list):
        sys.exit(f"launch-json-file: {path} has no list of configurations; fix or move it (it was left as it is)")
    return raw, document


def read_state(state_path):
    if not os.path.exists(state_path):
        return None
    with open(state_path) as f:
        return json.load(f)


def atomic_write(path, data):
    partial = path + ".partial"
    with open(partial, "wb") as f:
        f.write(data)
    os.replace(partial, path)


def named(configurations, names):
    return [c for c in configurations if isinstance(c, dict) and c.get("name") in names]


def without(configurations, names):
    return [c for c in configurations if not (isinstance(c, dict) and c.get("name") in names)]


def write(path, state_path, ours):
    raw, document = read_launch(path)
    state = read_state(state_path)
    if state is None:
        state = {"original": None if raw is None else raw.decode("utf-8"), "written": []}
    names = {c["name"] for c in ours}
    document = document if document is not None else {"version": "0.2.0"}
    kept = without(document.get("configurations", []), names | set(state["written"]))
    document["configurations"] = kept + ours
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    state["written"] = sorted(names)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(state_path, json.dumps(state, indent=2).encode("utf-8"))
    atomic_write(path, data)
    print(f"{path}: {len(ours)} configuration(s) of the stack, {len(kept)} of yours kept")


def restore(path, state_path):
    state = read_state(state_path)
    if state is None:
        print(f"{path}: nothing of the stack's to take out")
        return
    raw, document = read_launch(path)
    if raw is not None:
        names = set(state["written"])
        original = state["original"]
        before = json.loads(strip_jsonc(original)) if original else {"version": "0.2.0"}
        rest = {**document, "configurations": without(document.get("configurations", []), names)}
        untouched = {**before, "configurations": without(before.get("configurations", []), names)}
        if rest == untouched:
            # Nothing of the developer's changed since the stack first wrote: the original, byte for byte.
            if original is None:
                os.remove(path)
            else:
                atomic_write(path, original.encode("utf-8"))
            print(f"{path}: put back as it was before the stack")
        else:
            rest["configurations"] += named(before.get("configurations", []), names)
            atomic_write(path, (json.dumps(rest, indent=2) + "\n").encode("utf-8"))
            print(f"{path}: the stack's configurations taken out, your changes since kept")
    os.remove(state_path)


def main():
    path = os.environ["LAUNCH_FILE"]
    state_path = os.path.join(os.path.dirname(path), STATE_NAME)
    if sys.argv[1:] == ["write"]:
        write(path, state_path, json.loads(os.environ["LAUNCH_JSON"])["configurations"])
    elif sys.argv[1:] == ["restore"]:
        restore(path, state_path)
    else:
        sys.exit("usage: launch-json-file write|restore")


main()
