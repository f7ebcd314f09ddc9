//! Anthropic routes: messages and count_tokens (one schema; count_tokens has no `max_tokens`).
//!
//! The beta API (`?beta=true`, `anthropic-beta` headers) shares the path, so its fields and
//! block types are part of the schema here.

use super::{
    array_of_strings, boolean, fail, message_list, object, present, role, string, string_or_object,
    wrong_type, Check, Path, Rules,
};
use crate::json::Node;

/// The current SDK's `MessageParam.role`: `system` entries inside `messages` are accepted.
const ROLES: &[&str] = &["user", "assistant", "system"];

/// Request block types and the response blocks that may be sent back, beta included.
const BLOCK_TYPES: &[&str] = &[
    "text",
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "advisor_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
    "compaction",
    "mid_conv_system",
    "tool_addition",
    "tool_removal",
    "fallback",
];

/// Tool types, beta included; a custom tool may leave `type` out.
const TOOL_TYPES: &[&str] = &[
    "custom",
    "bash_20241022",
    "bash_20250124",
    "code_execution_20250522",
    "code_execution_20250825",
    "code_execution_20260120",
    "code_execution_20260521",
    "computer_20241022",
    "computer_20250124",
    "computer_20251124",
    "memory_20250818",
    "text_editor_20241022",
    "text_editor_20250124",
    "text_editor_20250429",
    "text_editor_20250728",
    "web_search_20250305",
    "web_search_20260209",
    "web_search_20260318",
    "web_fetch_20250910",
    "web_fetch_20260209",
    "web_fetch_20260309",
    "web_fetch_20260318",
    "advisor_20260301",
    "tool_search_tool_bm25",
    "tool_search_tool_bm25_20251119",
    "tool_search_tool_regex",
    "tool_search_tool_regex_20251119",
    "mcp_toolset",
];

const TOOL_CHOICES: &[&str] = &["auto", "any", "tool", "none"];
const THINKING_TYPES: &[&str] = &["enabled", "disabled", "adaptive"];

/// `POST /v1/messages` (`with_max_tokens`) and `POST /v1/messages/count_tokens`.
pub(super) fn messages(body: &Node<'_>, r: Rules, with_max_tokens: bool) -> Check {
    let at = &Path::Root;
    if with_max_tokens {
        match body.get("max_tokens") {
            None => return Err(fail(&at.key("max_tokens"), "is required")),
            Some(v) => r.integer_value(&at.key("max_tokens"), v, 1, None)?,
        }
    }
    message_list(body, |at, msg| {
        let role = role(msg, at)?;
        r.one_of(&at.key("role"), &role, "role", ROLES)?;
        if let Some(content) = present(msg, "content") {
            blocks(r, &at.key("content"), content)?;
        }
        r.required(msg, at, "content")
    })?;
    if let Some(system) = present(body, "system") {
        r.content(
            &at.key("system"),
            system,
            "text blocks",
            "system block type",
            &["text"],
        )?;
    }
    r.number(body, at, "temperature", 0.0, 1.0)?;
    r.number(body, at, "top_p", 0.0, 1.0)?;
    r.integer(body, at, "top_k", 0, None)?;
    boolean(body, at, "stream")?;
    array_of_strings(body, at, "stop_sequences")?;
    r.array_of_objects(body, at, "tools", TOOL_TYPES, true)?;
    r.array_of_objects(body, at, "mcp_servers", &["url"], false)?;
    if let Some(choice) = present(body, "tool_choice") {
        r.typed_object(&at.key("tool_choice"), choice, "tool choice", TOOL_CHOICES)?;
    }
    if let Some(thinking) = present(body, "thinking") {
        r.typed_object(
            &at.key("thinking"),
            thinking,
            "thinking type",
            THINKING_TYPES,
        )?;
        r.integer(thinking, &at.key("thinking"), "budget_tokens", 1, None)?;
    }
    for key in [
        "metadata",
        "context_management",
        "output_format",
        "output_config",
        "cache_control",
        "diagnostics",
    ] {
        object(body, at, key)?;
    }
    string(body, at, "inference_geo")?;
    r.enumerated(
        body,
        at,
        "service_tier",
        "service tier",
        &["auto", "standard_only"],
    )?;
    r.enumerated(body, at, "speed", "speed", &["standard", "fast"])?;
    string_or_object(body, at, "container")
}

/// Message content: a string or blocks; a `tool_result`'s own content is checked the same way.
fn blocks(r: Rules, path: &Path<'_>, v: &Node<'_>) -> Check {
    r.content(path, v, "content blocks", "block type", BLOCK_TYPES)?;
    let Node::Arr(items) = v else {
        return Ok(());
    };
    for (i, block) in items.iter().enumerate() {
        let block_path = path.index(i);
        object(block, &block_path, "cache_control")?;
        // Read once: an escaped type is unescaped here, not once per comparison.
        let Some(Node::Str(ty)) = block.get("type") else {
            continue;
        };
        match &*ty.text() {
            "tool_result" => {
                if let Some(inner) = present(block, "content") {
                    blocks(r, &block_path.key("content"), inner)?;
                }
                boolean(block, &block_path, "is_error")?;
                string(block, &block_path, "tool_use_id")?;
                r.required(block, &block_path, "tool_use_id")?;
            }
            "tool_use" | "server_tool_use" => {
                string(block, &block_path, "id")?;
                string(block, &block_path, "name")?;
                if let Some(input) = block.get("input") {
                    if !matches!(input, Node::Obj(_)) {
                        return Err(wrong_type(&block_path.key("input"), "an object", input));
                    }
                }
            }
            "thinking" => {
                string(block, &block_path, "thinking")?;
                string(block, &block_path, "signature")?;
            }
            "redacted_thinking" => {
                string(block, &block_path, "data")?;
            }
            "image" | "document" => {
                object(block, &block_path, "source")?;
                r.required(block, &block_path, "source")?;
            }
            _ => {}
        }
    }
    Ok(())
}

pub(super) const MESSAGES_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "cache_control",
    "container",
    "context_management",
    "diagnostics",
    "fallback_credit_token",
    "fallbacks",
    "inference_geo",
    "mcp_servers",
    "metadata",
    "output_config",
    "output_format",
    "service_tier",
    "speed",
    "stop_sequences",
    "stream",
    "system",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_k",
    "top_p",
];

pub(super) const COUNT_TOKENS_FIELDS: &[&str] = &[
    "model",
    "messages",
    "cache_control",
    "context_management",
    "mcp_servers",
    "output_config",
    "output_format",
    "speed",
    "system",
    "thinking",
    "tool_choice",
    "tools",
];
