#!/usr/bin/env python3
"""An agent's chat request of about SIZE bytes (default 100 KiB), written to stdout: a system
prompt, then turns of a user message with a code block, an assistant tool call and a tool
result, the shape coding agents send (many `\\n` and `\\"` escapes). Deterministic.

    python3 benches/agent_body.py > /tmp/agent.json
    BODY=/tmp/agent.json bash benches/instructions.sh 200
"""
import json
import sys

size = int(sys.argv[1]) if len(sys.argv) > 1 else 100 * 1024
msgs = [{"role": "system", "content": "You are a coding agent.\nFollow the rules:\n- be \"careful\"\n- use tools"}]
i = 0
while len(json.dumps(msgs)) < size:
    msgs.append({"role": "user", "content": f"step {i}: please fix the bug in `src/lib.rs` line {i}\n```rust\nfn main() {{\n    println!(\"hello {i}\");\n}}\n```"})
    msgs.append({"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{i}", "type": "function", "function": {"name": "read_file", "arguments": json.dumps({"path": f"src/f{i}.rs"})}}]})
    msgs.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "use std::io;\n\nfn f() -> io::Result<()> {\n    Ok(())\n}\n" * 3})
    i += 1
body = {
    "model": "gpt-4o-mini",
    "messages": msgs,
    "tools": [{"type": "function", "function": {"name": "read_file", "description": "Read a file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}],
    "temperature": 0.2,
    "stream": False,
}
sys.stdout.write(json.dumps(body))
