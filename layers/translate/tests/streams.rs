//! Stream translation on recorded event sequences of both APIs: golden outputs, what an SDK
//! would accumulate from them, and chunking independence.

use std::{fs, path::PathBuf};

use portcullis_translate::{Format, Plan, StreamTranslator};
use proptest::prelude::*;
use serde_json::Value;

const CREATED: u64 = 1_750_000_000;

fn fixture(name: &str) -> Vec<u8> {
    fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn upstream_of(name: &str) -> Format {
    if name.starts_with("anthropic") {
        Format::Messages
    } else {
        Format::ChatCompletions
    }
}

fn plan(upstream: Format, client: Format) -> Plan {
    let mut p = Plan::new(client, upstream);
    p.stream = true;
    p.include_usage = true;
    p
}

fn translate_in(plan: &Plan, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut t = StreamTranslator::new(plan).unwrap().with_created(CREATED);
    let mut out = Vec::new();
    let mut last = 0;
    for &c in cuts {
        let c = c.clamp(last, input.len());
        out.extend_from_slice(&t.feed(&input[last..c]));
        last = c;
    }
    out.extend_from_slice(&t.feed(&input[last..]));
    out.extend_from_slice(&t.finish());
    out
}

/// `(event name, data)` of an SSE text.
fn events(text: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8(text.to_vec()).unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_owned();
                }
            }
            (name, data)
        })
        .collect()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

const FIXTURES: &[&str] = &[
    "anthropic_text.sse",
    "anthropic_thinking_tool_use.sse",
    "anthropic_overloaded.sse",
    "anthropic_web_search.sse",
    "openai_text.sse",
    "openai_tool_calls.sse",
    "vllm_reasoning.sse",
    "openai_midstream_error.sse",
];

fn clients_for(upstream: Format) -> Vec<Format> {
    [Format::ChatCompletions, Format::Messages, Format::Responses]
        .into_iter()
        .filter(|c| *c != upstream)
        .collect()
}

fn client_tag(f: Format) -> &'static str {
    match f {
        Format::ChatCompletions => "chat",
        Format::Messages => "messages",
        Format::Responses => "responses",
    }
}

/// Every fixture, translated for every other client API, matches its golden file
/// (`UPDATE_GOLDEN=1` rewrites them; review the diff).
#[test]
fn golden_outputs() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden");
    fs::create_dir_all(&dir).unwrap();
    for name in FIXTURES {
        let up = upstream_of(name);
        for client in clients_for(up) {
            let out = translate_in(&plan(up, client), &fixture(name), &[]);
            let path = dir.join(format!(
                "{}.{}.sse",
                name.trim_end_matches(".sse"),
                client_tag(client)
            ));
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                fs::write(&path, &out).unwrap();
            }
            let want =
                fs::read(&path).unwrap_or_else(|_| panic!("missing golden {}", path.display()));
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want),
                "{name} -> {client:?}"
            );
            // Every data line of every output is JSON (or [DONE]).
            for (_, data) in events(&out) {
                if data != "[DONE]" {
                    json(&data);
                }
            }
        }
    }
}

/// What the Anthropic SDK's accumulator would build from a translated stream.
#[derive(Debug, Default)]
struct AnthropicAcc {
    blocks: Vec<Value>,
    stop_reason: Option<String>,
    usage: Value,
    error: Option<Value>,
    stopped: bool,
}

fn accumulate_anthropic(out: &[u8]) -> AnthropicAcc {
    let mut acc = AnthropicAcc::default();
    for (name, data) in events(out) {
        let v = json(&data);
        assert_eq!(v["type"], name, "event name matches type");
        assert!(!acc.stopped, "nothing after message_stop");
        match name.as_str() {
            "message_start" => acc.usage = v["message"]["usage"].clone(),
            "content_block_start" => {
                assert_eq!(v["index"].as_u64().unwrap() as usize, acc.blocks.len());
                acc.blocks.push(v["content_block"].clone());
            }
            "content_block_delta" => {
                let b = &mut acc.blocks[v["index"].as_u64().unwrap() as usize];
                let d = &v["delta"];
                let (field, piece) = match d["type"].as_str().unwrap() {
                    "text_delta" => ("text", &d["text"]),
                    "thinking_delta" => ("thinking", &d["thinking"]),
                    "signature_delta" => ("signature", &d["signature"]),
                    "input_json_delta" => ("partial", &d["partial_json"]),
                    t => panic!("delta {t}"),
                };
                let s = format!(
                    "{}{}",
                    b[field].as_str().unwrap_or(""),
                    piece.as_str().unwrap()
                );
                b[field] = Value::String(s);
            }
            "content_block_stop" => {}
            "message_delta" => {
                acc.stop_reason = v["delta"]["stop_reason"].as_str().map(str::to_owned);
                acc.usage = v["usage"].clone();
            }
            "message_stop" => acc.stopped = true,
            "error" => acc.error = Some(v["error"].clone()),
            other => panic!("unexpected event {other}"),
        }
    }
    acc
}

#[test]
fn openai_tool_calls_to_anthropic_events() {
    let out = translate_in(
        &plan(Format::ChatCompletions, Format::Messages),
        &fixture("openai_tool_calls.sse"),
        &[],
    );
    let acc = accumulate_anthropic(&out);
    assert!(acc.stopped);
    assert_eq!(acc.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(acc.blocks.len(), 2);
    assert_eq!(acc.blocks[0]["name"], "get_weather");
    assert_eq!(acc.blocks[0]["id"], "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_eq!(
        json(acc.blocks[0]["partial"].as_str().unwrap()),
        serde_json::json!({"location": "Paris"})
    );
    assert_eq!(acc.blocks[1]["name"], "get_time");
    assert_eq!(acc.usage["input_tokens"], 16);
    assert_eq!(acc.usage["cache_read_input_tokens"], 64);
    assert_eq!(acc.usage["output_tokens"], 40);
}

#[test]
fn openai_reasoning_and_text_to_anthropic_events() {
    let out = translate_in(
        &plan(Format::ChatCompletions, Format::Messages),
        &fixture("vllm_reasoning.sse"),
        &[],
    );
    let acc = accumulate_anthropic(&out);
    assert_eq!(acc.blocks[0]["type"], "thinking");
    assert_eq!(acc.blocks[0]["thinking"], "Okay, the user greets me.");
    assert_eq!(acc.blocks[1]["text"], "Hi there!");
    assert_eq!(acc.stop_reason.as_deref(), Some("end_turn"));
}

#[test]
fn openai_midstream_error_becomes_anthropic_error_event() {
    let out = translate_in(
        &plan(Format::ChatCompletions, Format::Messages),
        &fixture("openai_midstream_error.sse"),
        &[],
    );
    let acc = accumulate_anthropic(&out);
    assert!(!acc.stopped, "no message_stop after an error");
    assert_eq!(acc.blocks[0]["text"], "Par");
    let e = acc.error.expect("error event");
    assert_eq!(e["type"], "api_error");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("server had an error"));
}

/// What the OpenAI SDK would build from a translated chat stream.
#[derive(Debug, Default)]
struct ChatAcc {
    content: String,
    reasoning: String,
    tools: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
    done: bool,
}

fn accumulate_chat(out: &[u8]) -> ChatAcc {
    let mut acc = ChatAcc::default();
    for (name, data) in events(out) {
        assert!(name.is_empty(), "chat streams have no event names");
        assert!(!acc.done, "nothing after [DONE]");
        if data == "[DONE]" {
            acc.done = true;
            continue;
        }
        let v = json(&data);
        if v.get("error").is_some() {
            acc.error = Some(v["error"].clone());
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(u) = v.get("usage") {
            acc.usage = Some(u.clone());
        }
        for c in v["choices"].as_array().unwrap() {
            let d = &c["delta"];
            if let Some(s) = d["content"].as_str() {
                acc.content.push_str(s);
            }
            if let Some(s) = d["reasoning_content"].as_str() {
                acc.reasoning.push_str(s);
            }
            for t in d["tool_calls"].as_array().into_iter().flatten() {
                let i = t["index"].as_u64().unwrap() as usize;
                if i == acc.tools.len() {
                    acc.tools.push(Default::default());
                }
                let e = &mut acc.tools[i];
                if let Some(id) = t["id"].as_str() {
                    e.0 = id.to_owned();
                }
                if let Some(n) = t["function"]["name"].as_str() {
                    e.1.push_str(n);
                }
                if let Some(a) = t["function"]["arguments"].as_str() {
                    e.2.push_str(a);
                }
            }
            if let Some(f) = c["finish_reason"].as_str() {
                acc.finish = Some(f.to_owned());
            }
        }
    }
    acc
}

#[test]
fn anthropic_thinking_and_tool_use_to_chat_chunks() {
    let out = translate_in(
        &plan(Format::Messages, Format::ChatCompletions),
        &fixture("anthropic_thinking_tool_use.sse"),
        &[],
    );
    let acc = accumulate_chat(&out);
    assert!(acc.done);
    assert_eq!(
        acc.reasoning,
        "The user wants the weather in San Francisco; I should call get_weather."
    );
    assert_eq!(
        acc.content,
        "I'll check the weather for you \u{2014} \"SF\".\n"
    );
    assert_eq!(acc.tools.len(), 1);
    assert_eq!(acc.tools[0].0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(acc.tools[0].1, "get_weather");
    assert_eq!(
        json(&acc.tools[0].2),
        serde_json::json!({"location": "San Francisco, CA"})
    );
    assert_eq!(acc.finish.as_deref(), Some("tool_calls"));
    let u = acc.usage.expect("usage chunk");
    assert_eq!(u["prompt_tokens"], 472 + 2048);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 2048);
    assert_eq!(u["completion_tokens"], 89);
}

/// What Anthropic streams when it runs a web search itself (server tool blocks, then cited
/// text), and a delta and an event of types newer than this crate: the client gets the text,
/// and the stream ends as it should, not with an error.
#[test]
fn server_tool_blocks_and_unknown_deltas_are_skipped() {
    let input = fixture("anthropic_text.sse");
    let text = String::from_utf8(input).unwrap();
    let extra = concat!(
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"query\":\"q\"}"}}"#,
        "\n\nevent: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\nevent: content_block_start\n",
        r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]}}"#,
        "\n\nevent: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":1}"#,
        "\n\nevent: future_event\n",
        r#"data: {"type":"future_event","x":1}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":2,"delta":{"type":"future_delta","x":1}}"#,
        "\n\n",
    );
    // After message_start (its first event), before the text block.
    let at = text.find("event: content_block_start").unwrap();
    let input = format!("{}{}{}", &text[..at], extra, &text[at..]);
    for client in [Format::ChatCompletions, Format::Responses] {
        let out = translate_in(&plan(Format::Messages, client), input.as_bytes(), &[]);
        let out_text = String::from_utf8(out.clone()).unwrap();
        assert!(!out_text.contains("could not be read"), "{out_text}");
        if client == Format::ChatCompletions {
            let acc = accumulate_chat(&out);
            assert!(acc.done && acc.error.is_none(), "{out_text}");
            assert_eq!(acc.content, "Hello! How can I help?");
            assert!(
                acc.tools.is_empty(),
                "a server tool is not the client's call"
            );
            assert_eq!(acc.finish.as_deref(), Some("stop"));
        } else {
            let r = check_responses(&out);
            assert_eq!(r["status"], "completed", "{r}");
        }
    }
}

#[test]
fn usage_chunk_only_when_asked() {
    let mut p = plan(Format::Messages, Format::ChatCompletions);
    p.include_usage = false;
    let out = translate_in(&p, &fixture("anthropic_text.sse"), &[]);
    let acc = accumulate_chat(&out);
    assert!(acc.usage.is_none());
    assert_eq!(acc.content, "Hello! How can I help?");
    assert_eq!(acc.finish.as_deref(), Some("stop"));
}

#[test]
fn anthropic_overloaded_to_chat_error_without_done() {
    let out = translate_in(
        &plan(Format::Messages, Format::ChatCompletions),
        &fixture("anthropic_overloaded.sse"),
        &[],
    );
    let acc = accumulate_chat(&out);
    assert!(!acc.done, "interface.md: no [DONE] after an error");
    assert_eq!(acc.content, "Hello");
    let e = acc.error.unwrap();
    assert_eq!(e["message"], "Overloaded");
    assert_eq!(e["code"], "overloaded_error");
    assert_eq!(e["type"], "server_error");
}

#[test]
fn truncated_streams_end_with_an_error() {
    let text = fixture("anthropic_text.sse");
    let cut = &text[..text.len() / 2];
    let acc = accumulate_chat(&translate_in(
        &plan(Format::Messages, Format::ChatCompletions),
        cut,
        &[],
    ));
    assert!(acc.error.is_some() && !acc.done);
    let text = fixture("openai_text.sse");
    let acc = accumulate_anthropic(&translate_in(
        &plan(Format::ChatCompletions, Format::Messages),
        &text[..200],
        &[],
    ));
    assert!(acc.error.is_some() && !acc.stopped);
}

#[test]
fn failed_body_becomes_error_event() {
    let mut t = StreamTranslator::new(&plan(Format::Messages, Format::Responses)).unwrap();
    let text = fixture("anthropic_text.sse");
    let mut out = t.feed(&text[..300]).to_vec();
    out.extend_from_slice(&t.fail("connection reset"));
    assert!(t.is_done());
    assert!(
        t.feed(b"data: more\n\n").is_empty(),
        "input after the end is ignored"
    );
    let last = events(&out).pop().unwrap();
    assert_eq!(last.0, "error");
    let v = json(&last.1);
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "upstream_error");
    assert!(v["message"].as_str().unwrap().contains("connection reset"));
}

fn check_responses(out: &[u8]) -> Value {
    let mut text = String::new();
    let mut args = String::new();
    let mut completed = Value::Null;
    for (i, (name, data)) in events(out).into_iter().enumerate() {
        let v = json(&data);
        assert_eq!(v["type"], name);
        assert_eq!(
            v["sequence_number"], i,
            "sequence numbers count every event"
        );
        match name.as_str() {
            "response.output_text.delta" => text.push_str(v["delta"].as_str().unwrap()),
            "response.output_text.done" => assert_eq!(v["text"], text),
            "response.function_call_arguments.delta" => args.push_str(v["delta"].as_str().unwrap()),
            "response.completed" | "response.incomplete" => completed = v["response"].clone(),
            _ => {}
        }
    }
    completed
}

#[test]
fn anthropic_to_responses_events() {
    let out = translate_in(
        &plan(Format::Messages, Format::Responses),
        &fixture("anthropic_thinking_tool_use.sse"),
        &[],
    );
    let names: Vec<String> = events(&out).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let r = check_responses(&out);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"][0]["type"], "reasoning");
    assert_eq!(
        r["output"][0]["encrypted_content"],
        "anthropic-signature:EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
    );
    assert_eq!(
        r["output"][1]["content"][0]["text"],
        "I'll check the weather for you \u{2014} \"SF\".\n"
    );
    assert_eq!(r["output"][2]["call_id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(
        r["output"][2]["arguments"],
        "{\"location\": \"San Francisco, CA\"}"
    );
    assert_eq!(r["usage"]["input_tokens"], 2520);
    assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 2048);
    assert_eq!(r["usage"]["output_tokens"], 89);
}

#[test]
fn chat_to_responses_events() {
    let out = translate_in(
        &plan(Format::ChatCompletions, Format::Responses),
        &fixture("openai_tool_calls.sse"),
        &[],
    );
    let r = check_responses(&out);
    assert_eq!(r["output"].as_array().unwrap().len(), 2);
    assert_eq!(r["output"][0]["name"], "get_weather");
    assert_eq!(r["output"][0]["arguments"], "{\"location\": \"Paris\"}");
    assert_eq!(r["output"][1]["name"], "get_time");
    let out = translate_in(
        &plan(Format::ChatCompletions, Format::Responses),
        &fixture("openai_text.sse"),
        &[],
    );
    let r = check_responses(&out);
    assert_eq!(
        r["output"][0]["content"][0]["text"],
        "Hello! How can I help \"you\"?"
    );
    assert_eq!(r["usage"]["total_tokens"], 29);
}

#[test]
fn json_tool_stream_is_text() {
    let text = fixture("anthropic_thinking_tool_use.sse");
    let text = String::from_utf8(text)
        .unwrap()
        .replace("\"name\":\"get_weather\"", "\"name\":\"json_response\"");
    let mut p = plan(Format::Messages, Format::ChatCompletions);
    p.json_tool = true;
    let acc = accumulate_chat(&translate_in(&p, text.as_bytes(), &[]));
    assert!(acc.tools.is_empty());
    assert!(
        acc.content
            .ends_with("{\"location\": \"San Francisco, CA\"}"),
        "{}",
        acc.content
    );
    assert_eq!(acc.finish.as_deref(), Some("stop"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// However the upstream's bytes are cut, the client gets the same bytes.
    #[test]
    fn chunking_does_not_change_the_output(
        which in 0..FIXTURES.len(),
        client in 0usize..2,
        mut cuts in proptest::collection::vec(0usize..4000, 0..40),
    ) {
        let name = FIXTURES[which];
        let up = upstream_of(name);
        let client = clients_for(up)[client];
        let input = fixture(name);
        cuts.sort_unstable();
        let p = plan(up, client);
        let whole = translate_in(&p, &input, &[]);
        let pieces = translate_in(&p, &input, &cuts);
        prop_assert_eq!(String::from_utf8_lossy(&pieces), String::from_utf8_lossy(&whole));
    }

    /// Byte by byte, too (the worst case for the line buffer).
    #[test]
    fn byte_by_byte(which in 0..FIXTURES.len()) {
        let name = FIXTURES[which];
        let up = upstream_of(name);
        let input = fixture(name);
        for client in clients_for(up) {
            let p = plan(up, client);
            let cuts: Vec<usize> = (1..input.len()).collect();
            prop_assert_eq!(translate_in(&p, &input, &cuts), translate_in(&p, &input, &[]));
        }
    }
}

/// The characters `start..end` of `text` (OpenAI's annotation indices count characters).
fn char_slice(text: &str, a: &Value, start: &str, end: &str) -> String {
    let (s, e) = (a[start].as_u64().unwrap(), a[end].as_u64().unwrap());
    text.chars()
        .skip(s as usize)
        .take((e - s) as usize)
        .collect()
}

/// Anthropic's web search stream: the citations of a text block (`citations_delta`, before
/// its text) reach chat clients as `annotations` and Responses clients as
/// `response.output_text.annotation.added`, each over the cited block's characters.
#[test]
fn web_search_citations_become_annotations() {
    let input = fixture("anthropic_web_search.sse");
    let want_text = "I'll look that up.\n\nÜber Zürich: it is sunny today and cold.";
    let urls = ["https://wx.example/zh", "https://news.example/a"];

    let out = translate_in(
        &plan(Format::Messages, Format::ChatCompletions),
        &input,
        &[],
    );
    let acc = accumulate_chat(&out);
    assert_eq!(acc.content, want_text);
    let mut annotations = Vec::new();
    for (_, data) in events(&out) {
        if data != "[DONE]" {
            for c in json(&data)["choices"].as_array().unwrap() {
                annotations.extend(
                    c["delta"]["annotations"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
        }
    }
    assert_eq!(annotations.len(), 2, "{annotations:?}");
    for (a, url) in annotations.iter().zip(urls) {
        assert_eq!(a["type"], "url_citation");
        let u = &a["url_citation"];
        assert_eq!(u["url"], url);
        assert_eq!(
            char_slice(&acc.content, u, "start_index", "end_index"),
            "it is sunny today"
        );
    }
    assert!(annotations[0]["url_citation"]["title"] == "Wetter Zürich");

    let out = translate_in(&plan(Format::Messages, Format::Responses), &input, &[]);
    let r = check_responses(&out);
    let output = r["output"].as_array().unwrap();
    assert_eq!(output.len(), 1, "text blocks in a row are one message: {r}");
    let part = &output[0]["content"][0];
    assert_eq!(part["text"], want_text);
    let done = part["annotations"].as_array().unwrap();
    let added: Vec<Value> = events(&out)
        .into_iter()
        .filter(|(n, _)| n == "response.output_text.annotation.added")
        .map(|(_, d)| json(&d))
        .collect();
    assert_eq!(added.len(), 2);
    for (i, (ev, url)) in added.iter().zip(urls).enumerate() {
        assert_eq!(ev["annotation_index"], i);
        assert_eq!(ev["item_id"], output[0]["id"]);
        assert_eq!(ev["annotation"], done[i]);
        assert_eq!(done[i]["url"], url);
        assert_eq!(
            char_slice(
                part["text"].as_str().unwrap(),
                &done[i],
                "start_index",
                "end_index"
            ),
            "it is sunny today"
        );
    }
}
