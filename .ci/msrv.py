"""Fails when a resolved dependency needs a newer Rust than our rust-version.

Reads `cargo metadata` JSON on stdin and compares the declared rust-versions
of everything the crate and its features pull in (dev-dependencies excluded)
with ours. `.ci/run` also compiles the library with the MSRV toolchain when it
is installed; where it is not, this comparison is the only MSRV check.
"""
import json
import sys

ours = tuple(int(x) for x in sys.argv[1].split("."))
meta = json.load(sys.stdin)
pkgs = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(p["id"] for p in meta["packages"] if p["name"] == "pgpatterns")

seen, stack = set(), [root]
while stack:
    pid = stack.pop()
    if pid in seen:
        continue
    seen.add(pid)
    for dep in nodes[pid]["deps"]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if kinds - {"dev"}:
            stack.append(dep["pkg"])

worst = []
for pid in seen:
    rv = pkgs[pid].get("rust_version")
    if rv:
        v = tuple(int(x) for x in rv.split("."))
        v += (0,) * (3 - len(v))
        if v > ours + (0,) * (3 - len(ours)):
            worst.append((pkgs[pid]["name"], rv))
if worst:
    print(f"rust-version {sys.argv[1]} is lower than required by: {worst}", file=sys.stderr)
    sys.exit(1)
print(f"rust-version {sys.argv[1]} covers {len(seen)} crates")
