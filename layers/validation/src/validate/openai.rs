//! OpenAI routes: chat completions, completions, embeddings, responses.

use super::{
    array, array_of_strings, array_of_strings_value, boolean, fail, message_list, object, present,
    role, stop, string, string_or_array, string_or_object, text_or_tokens, wrong_type, Check, Path,
    Rules,
};
use crate::json::Node;

const SEED_MIN: i128 = i64::MIN as i128;
const SEED_MAX: i128 = u64::MAX as i128;

/// `reasoning_effort` (chat) and `reasoning.effort` (responses).
const REASONING_EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh", "max"];
const VERBOSITIES: &[&str] = &["low", "medium", "high"];
const CACHE_RETENTIONS: &[&str] = &["in_memory", "24h"];
const TOOL_CHOICE_MODES: &[&str] = &["none", "auto", "required"];

// === POST /v1/chat/completions ===

const CHAT_ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];
const CHAT_PART_TYPES: &[&str] = &["text", "image_url", "input_audio", "file", "refusal"];
const CHAT_TOOL_TYPES: &[&str] = &["function", "custom"];
const CHAT_FORMAT_TYPES: &[&str] = &["text", "json_object", "json_schema"];
const CHAT_SERVICE_TIERS: &[&str] = &["auto", "default", "flex", "scale", "priority", "fast"];
const MODALITIES: &[&str] = &["text", "audio"];

pub(super) fn chat(body: &Node<'_>, r: Rules) -> Check {
    message_list(body, |at, msg| chat_message(at, msg, r))?;
    let at = &Path::Root;
    r.number(body, at, "temperature", 0.0, 2.0)?;
    r.number(body, at, "top_p", 0.0, 1.0)?;
    r.number(body, at, "presence_penalty", -2.0, 2.0)?;
    r.number(body, at, "frequency_penalty", -2.0, 2.0)?;
    r.integer(body, at, "n", 1, Some(128))?;
    r.integer(body, at, "max_tokens", 1, None)?;
    r.integer(body, at, "max_completion_tokens", 1, None)?;
    r.integer(body, at, "top_logprobs", 0, Some(20))?;
    r.integer(body, at, "seed", SEED_MIN, Some(SEED_MAX))?;
    for key in ["stream", "logprobs", "parallel_tool_calls", "store"] {
        boolean(body, at, key)?;
    }
    stop(body, at, "stop")?;
    r.array_of_objects(body, at, "tools", CHAT_TOOL_TYPES, false)?;
    r.array_of_objects(body, at, "functions", &[], true)?;
    tool_choice(body, at, r)?;
    string_or_object(body, at, "function_call")?;
    if let Some(format) = present(body, "response_format") {
        let path = at.key("response_format");
        if r.typed_object(&path, format, "response format type", CHAT_FORMAT_TYPES)?
            == "json_schema"
        {
            object(format, &path, "json_schema")?;
            r.required(format, &path, "json_schema")?;
        }
    }
    for key in [
        "stream_options",
        "metadata",
        "logit_bias",
        "prediction",
        "audio",
        "web_search_options",
        "moderation",
        "prompt_cache_options",
    ] {
        object(body, at, key)?;
    }
    for key in ["user", "prompt_cache_key", "safety_identifier"] {
        string(body, at, key)?;
    }
    r.enumerated(
        body,
        at,
        "reasoning_effort",
        "reasoning effort",
        REASONING_EFFORTS,
    )?;
    r.enumerated(body, at, "service_tier", "service tier", CHAT_SERVICE_TIERS)?;
    r.enumerated(body, at, "verbosity", "verbosity", VERBOSITIES)?;
    r.enumerated(
        body,
        at,
        "prompt_cache_retention",
        "retention",
        CACHE_RETENTIONS,
    )?;
    if let Some(m) = present(body, "modalities") {
        let path = at.key("modalities");
        array_of_strings_value(&path, m)?;
        if let Node::Arr(items) = m {
            for (i, item) in items.iter().enumerate() {
                if let Node::Str(s) = item {
                    r.one_of(&path.index(i), &s.text(), "modality", MODALITIES)?;
                }
            }
        }
    }
    Ok(())
}

fn tool_choice(body: &Node<'_>, at: &Path<'_>, r: Rules) -> Check {
    string_or_object(body, at, "tool_choice")?;
    match present(body, "tool_choice") {
        Some(Node::Str(s)) => r.one_of(
            &at.key("tool_choice"),
            &s.text(),
            "tool choice",
            TOOL_CHOICE_MODES,
        ),
        _ => Ok(()),
    }
}

fn chat_message(at: &Path<'_>, msg: &Node<'_>, r: Rules) -> Check {
    let role = role(msg, at)?;
    r.one_of(&at.key("role"), &role, "role", CHAT_ROLES)?;
    string(msg, at, "name")?;
    if let Some(content) = present(msg, "content") {
        r.content(
            &at.key("content"),
            content,
            "content parts",
            "content part type",
            CHAT_PART_TYPES,
        )?;
    }
    r.array_of_objects(msg, at, "tool_calls", CHAT_TOOL_TYPES, false)?;
    string_or_object(msg, at, "function_call")?;
    string(msg, at, "tool_call_id")?;
    string(msg, at, "refusal")?;
    object(msg, at, "audio")?;
    if !r.strict {
        return Ok(());
    }
    // Strict: what each known role needs.
    match &*role {
        "system" | "developer" | "user" => r.required(msg, at, "content"),
        "assistant" => {
            // Content may be left out when the turn was a tool call, an audio reply or a refusal.
            let replaced = ["tool_calls", "function_call", "audio", "refusal"]
                .iter()
                .any(|k| present(msg, k).is_some());
            if replaced {
                Ok(())
            } else {
                r.required(msg, at, "content")
            }
        }
        "tool" => {
            r.required(msg, at, "content")?;
            r.required(msg, at, "tool_call_id")
        }
        // Deprecated, still accepted by OpenAI: a name and string content (or null).
        "function" => {
            r.required(msg, at, "name")?;
            string(msg, at, "content")
        }
        _ => Ok(()),
    }
}

pub(super) const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "moderation",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_options",
    "prompt_cache_retention",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

// === POST /v1/completions ===

pub(super) fn completions(body: &Node<'_>, r: Rules) -> Check {
    let at = &Path::Root;
    // The API reference calls `prompt` required, but the API defaults a missing one to
    // <|endoftext|>: only strict insists. `null` is in the SDK's own type.
    match body.get("prompt") {
        None if r.strict => return Err(fail(&at.key("prompt"), "is required")),
        None | Some(Node::Null) => {}
        Some(v) => text_or_tokens(r, &at.key("prompt"), v, true)?,
    }
    r.number(body, at, "temperature", 0.0, 2.0)?;
    r.number(body, at, "top_p", 0.0, 1.0)?;
    r.number(body, at, "presence_penalty", -2.0, 2.0)?;
    r.number(body, at, "frequency_penalty", -2.0, 2.0)?;
    r.integer(body, at, "n", 1, Some(128))?;
    // 0 is meaningful here: with `echo` it scores the prompt without generating.
    r.integer(body, at, "max_tokens", 0, None)?;
    r.integer(body, at, "best_of", 0, Some(20))?;
    r.integer(body, at, "logprobs", 0, Some(5))?;
    r.integer(body, at, "seed", SEED_MIN, Some(SEED_MAX))?;
    boolean(body, at, "stream")?;
    boolean(body, at, "echo")?;
    stop(body, at, "stop")?;
    string(body, at, "suffix")?;
    string(body, at, "user")?;
    object(body, at, "logit_bias")?;
    object(body, at, "stream_options")
}

pub(super) const COMPLETIONS_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "best_of",
    "echo",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "suffix",
    "temperature",
    "top_p",
    "user",
];

// === POST /v1/embeddings ===

pub(super) fn embeddings(body: &Node<'_>, r: Rules) -> Check {
    let at = &Path::Root;
    let path = at.key("input");
    match body.get("input") {
        None => return Err(fail(&path, "is required")),
        Some(v) => text_or_tokens(r, &path, v, false)?,
    }
    r.integer(body, at, "dimensions", 1, None)?;
    string(body, at, "user")?;
    r.enumerated(
        body,
        at,
        "encoding_format",
        "encoding format",
        &["float", "base64"],
    )
}

pub(super) const EMBEDDINGS_FIELDS: &[&str] =
    &["model", "input", "dimensions", "encoding_format", "user"];

// === POST /v1/responses ===

const RESPONSES_ROLES: &[&str] = &["user", "assistant", "system", "developer"];
const RESPONSES_PART_TYPES: &[&str] = &[
    "input_text",
    "input_image",
    "input_file",
    "input_audio",
    "output_text",
    "refusal",
];
const RESPONSES_ITEM_TYPES: &[&str] = &[
    "message",
    "file_search_call",
    "computer_call",
    "computer_call_output",
    "web_search_call",
    "function_call",
    "function_call_output",
    "tool_search_call",
    "tool_search_output",
    "additional_tools",
    "reasoning",
    "compaction",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "shell_call",
    "shell_call_output",
    "apply_patch_call",
    "apply_patch_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "custom_tool_call_output",
    "custom_tool_call",
    "compaction_trigger",
    "item_reference",
    "program",
    "program_output",
];
const RESPONSES_TOOL_TYPES: &[&str] = &[
    "function",
    "file_search",
    "computer",
    "computer_use_preview",
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "mcp",
    "code_interpreter",
    "programmatic_tool_calling",
    "image_generation",
    "local_shell",
    "shell",
    "custom",
    "namespace",
    "tool_search",
    "apply_patch",
];
const RESPONSES_FORMAT_TYPES: &[&str] = &["text", "json_schema", "json_object"];
const RESPONSES_SERVICE_TIERS: &[&str] = &[
    "auto",
    "default",
    "flex",
    "scale",
    "priority",
    "fast",
    "ultrafast",
];

/// `model` is checked by the caller (it may be left to a `prompt` template). `input` is
/// optional: `previous_response_id`, `conversation` or `prompt` can carry the conversation.
pub(super) fn responses(body: &Node<'_>, r: Rules) -> Check {
    let at = &Path::Root;
    if let Some(input) = present(body, "input") {
        let path = at.key("input");
        match input {
            Node::Str(_) => {}
            Node::Arr(items) => {
                for (i, item) in items.iter().enumerate() {
                    response_item(&path.index(i), item, r)?;
                }
            }
            other => {
                return Err(wrong_type(
                    &path,
                    "a string or an array of input items",
                    other,
                ))
            }
        }
    }
    // The create call documents a string; a response object echoes it as a list of items,
    // which clients replaying a response may send.
    if r.strict {
        string(body, at, "instructions")?;
    } else {
        string_or_array(body, at, "instructions")?;
    }
    r.array_of_objects(body, at, "tools", RESPONSES_TOOL_TYPES, false)?;
    tool_choice(body, at, r)?;
    if let Some(text) = present(body, "text") {
        let path = at.key("text");
        if !matches!(text, Node::Obj(_)) {
            return Err(wrong_type(&path, "an object", text));
        }
        if let Some(format) = present(text, "format") {
            let fpath = path.key("format");
            if r.typed_object(&fpath, format, "format type", RESPONSES_FORMAT_TYPES)?
                == "json_schema"
            {
                string(format, &fpath, "name")?;
                object(format, &fpath, "schema")?;
                boolean(format, &fpath, "strict")?;
                r.required(format, &fpath, "name")?;
                r.required(format, &fpath, "schema")?;
            }
        }
        r.enumerated(text, &path, "verbosity", "verbosity", VERBOSITIES)?;
    }
    if let Some(reasoning) = present(body, "reasoning") {
        let path = at.key("reasoning");
        if !matches!(reasoning, Node::Obj(_)) {
            return Err(wrong_type(&path, "an object", reasoning));
        }
        r.enumerated(
            reasoning,
            &path,
            "effort",
            "reasoning effort",
            REASONING_EFFORTS,
        )?;
        let summaries = &["auto", "concise", "detailed"];
        r.enumerated(reasoning, &path, "summary", "summary", summaries)?;
    }
    if let Some(prompt) = present(body, "prompt") {
        let path = at.key("prompt");
        if !matches!(prompt, Node::Obj(_)) {
            return Err(wrong_type(&path, "an object", prompt));
        }
        string(prompt, &path, "id")?;
        string(prompt, &path, "version")?;
        object(prompt, &path, "variables")?;
        r.required(prompt, &path, "id")?;
    }
    for key in ["stream", "store", "background", "parallel_tool_calls"] {
        boolean(body, at, key)?;
    }
    r.number(body, at, "temperature", 0.0, 2.0)?;
    r.number(body, at, "top_p", 0.0, 1.0)?;
    r.integer(body, at, "max_output_tokens", 1, None)?;
    r.integer(body, at, "max_tool_calls", 0, None)?;
    r.integer(body, at, "top_logprobs", 0, Some(20))?;
    for key in [
        "previous_response_id",
        "prompt_cache_key",
        "safety_identifier",
        "user",
    ] {
        string(body, at, key)?;
    }
    string_or_object(body, at, "conversation")?;
    for key in [
        "metadata",
        "stream_options",
        "moderation",
        "prompt_cache_options",
    ] {
        object(body, at, key)?;
    }
    array_of_strings(body, at, "include")?;
    r.array_of_objects(body, at, "context_management", &[], true)?;
    r.enumerated(
        body,
        at,
        "service_tier",
        "service tier",
        RESPONSES_SERVICE_TIERS,
    )?;
    r.enumerated(body, at, "truncation", "truncation", &["auto", "disabled"])?;
    r.enumerated(
        body,
        at,
        "prompt_cache_retention",
        "retention",
        CACHE_RETENTIONS,
    )
}

/// One item of a Responses `input`: a message (with or without `"type": "message"`), an
/// output item replayed (function calls, reasoning...), a tool output or an item reference.
fn response_item(at: &Path<'_>, item: &Node<'_>, r: Rules) -> Check {
    if !matches!(item, Node::Obj(_)) {
        return Err(wrong_type(at, "an object", item));
    }
    let ty = match item.get("type") {
        None | Some(Node::Null) => None,
        Some(Node::Str(t)) => Some(t.text()),
        Some(other) => return Err(wrong_type(&at.key("type"), "a string", other)),
    };
    let ty = ty.as_deref();
    if let Some(t) = ty {
        r.one_of(&at.key("type"), t, "item type", RESPONSES_ITEM_TYPES)?;
    }
    match ty {
        None | Some("message") => {
            // An item with neither type nor role is an item reference (`{"id": ...}`).
            if ty.is_none() && item.get("role").is_none() {
                string(item, at, "id")?;
                return r.required(item, at, "id");
            }
            let role = role(item, at)?;
            r.one_of(&at.key("role"), &role, "role", RESPONSES_ROLES)?;
            if let Some(content) = present(item, "content") {
                r.content(
                    &at.key("content"),
                    content,
                    "content parts",
                    "content part type",
                    RESPONSES_PART_TYPES,
                )?;
            }
            r.required(item, at, "content")
        }
        Some("function_call") | Some("custom_tool_call") => {
            for key in ["call_id", "name", "arguments", "input", "id"] {
                string(item, at, key)?;
            }
            r.required(item, at, "call_id")?;
            r.required(item, at, "name")
        }
        Some("function_call_output") | Some("custom_tool_call_output") => {
            string(item, at, "call_id")?;
            string_or_array(item, at, "output")?;
            r.required(item, at, "call_id")?;
            r.required(item, at, "output")
        }
        Some("reasoning") => {
            string(item, at, "id")?;
            string(item, at, "encrypted_content")?;
            r.array_of_objects(item, at, "summary", &["summary_text"], false)?;
            array(item, at, "content")?;
            r.required(item, at, "summary")
        }
        Some("item_reference") => {
            string(item, at, "id")?;
            r.required(item, at, "id")
        }
        Some("mcp_approval_response") => {
            string(item, at, "approval_request_id")?;
            boolean(item, at, "approve")
        }
        // Other items are checked only as objects with a string type: their shapes are the
        // upstream's to judge.
        _ => Ok(()),
    }
}

pub(super) const RESPONSES_FIELDS: &[&str] = &[
    "model",
    "input",
    "background",
    "context_management",
    "conversation",
    "include",
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "moderation",
    "parallel_tool_calls",
    "previous_response_id",
    "prompt",
    "prompt_cache_key",
    "prompt_cache_options",
    "prompt_cache_retention",
    "reasoning",
    "safety_identifier",
    "service_tier",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "truncation",
    "user",
];
