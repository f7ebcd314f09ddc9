//! Every request body of `tests/corpora/*/accept` (what the providers' current APIs accept,
//! in the shapes the SDKs and agents send) translated to each other API: it translates, or
//! it is refused as `Unsupported`, naming the field that cannot be carried. Never a parse
//! error ("not a valid request") for a body the provider itself would serve.

use std::path::Path;

use portcullis_translate::{translate_request, Format, TranslateError};

/// The translations these bodies get, and those that must succeed: each once failed (a
/// block, role or choice the crate's types did not read, or a shape it did not carry).
const MUST_TRANSLATE: &[(&str, Format)] = &[
    // `search_result` blocks: their text.
    (
        "messages/12_search_result_blocks.json",
        Format::ChatCompletions,
    ),
    // A web search that Anthropic ran, replayed in the history: left out.
    (
        "messages/18_server_web_search_replay.json",
        Format::ChatCompletions,
    ),
    // Text documents: text parts; inline PDFs: chat `file` parts.
    (
        "messages/08_document_pdf_base64.json",
        Format::ChatCompletions,
    ),
    (
        "messages/09_document_text_citations.json",
        Format::ChatCompletions,
    ),
    (
        "messages/11_document_content_blocks.json",
        Format::ChatCompletions,
    ),
    // Chat's web search: Anthropic's web search tool.
    (
        "chat_completions/23_web_search_options.json",
        Format::Messages,
    ),
    // `allowed_tools` and custom tools, from both OpenAI APIs.
    (
        "chat_completions/24_custom_tool_allowed_tools.json",
        Format::Messages,
    ),
    (
        "responses/19_custom_tool_grammar.json",
        Format::ChatCompletions,
    ),
    ("responses/19_custom_tool_grammar.json", Format::Messages),
];

#[test]
fn accepted_bodies_translate_or_name_what_cannot_be_carried() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpora");
    let mut failures = Vec::new();
    let mut translated = Vec::new();
    for (dir, client) in [
        ("chat_completions", Format::ChatCompletions),
        ("messages", Format::Messages),
        ("responses", Format::Responses),
    ] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir).join("accept"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 25, "{dir}: {} bodies", files.len());
        for f in files {
            let body = std::fs::read(&f).unwrap();
            let name = format!("{dir}/{}", f.file_name().unwrap().to_string_lossy());
            for target in [Format::ChatCompletions, Format::Messages] {
                if target == client {
                    continue;
                }
                match translate_request(client, target, &body) {
                    Ok(_) => translated.push((name.clone(), target)),
                    Err(TranslateError::Unsupported { field, .. }) if !field.is_empty() => {}
                    Err(e) => failures.push(format!("{name} -> {target:?}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (name, target) in MUST_TRANSLATE {
        assert!(
            translated.iter().any(|(n, t)| n == name && t == target),
            "{name} -> {target:?} did not translate"
        );
    }
}
