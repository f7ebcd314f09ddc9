use serde_json::json;

use super::*;

/// The body limit the tests resolve under (the gateway's default).
const LIMIT: usize = 10 * 1024 * 1024;

fn caller(n: u8) -> CallerId {
    CallerId([n; 16])
}

fn body(v: Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

fn answer(id: &str, item: &str, text: &str) -> Map<String, Value> {
    json!({"id": id, "object": "response", "status": "completed", "output": [
        {"type": "message", "id": item, "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": text, "annotations": []}]}]})
    .as_object()
    .unwrap()
    .clone()
}

fn input_of(b: &Bytes) -> Value {
    serde_json::from_slice::<Value>(b).unwrap()["input"].clone()
}

#[tokio::test]
async fn references_and_previous_responses_resolve_for_their_caller_only() {
    let store = ResponseStore::default();
    let (b, pending) = store
        .prepare(caller(1), body(json!({"model": "m", "input": "hi"})), LIMIT)
        .await
        .unwrap();
    assert_eq!(input_of(&b), "hi", "nothing to resolve: the body as sent");
    pending
        .expect("store defaults to true")
        .record(&answer("resp_1", "msg_1", "Hello!"));

    // The AI SDK's second turn: the earlier answer by reference.
    let turn2 = json!({"model": "m", "input": [
        {"role": "user", "content": "hi"},
        {"type": "item_reference", "id": "msg_1"},
        {"role": "user", "content": "again"}]});
    let (b, _) = store
        .prepare(caller(1), body(turn2.clone()), LIMIT)
        .await
        .unwrap();
    let input = input_of(&b);
    assert_eq!(input[1]["type"], "message");
    assert_eq!(input[1]["content"][0]["text"], "Hello!");
    assert_eq!(input[2]["content"], "again");

    // Another caller cannot see it.
    let e = store
        .prepare(caller(2), body(turn2), LIMIT)
        .await
        .unwrap_err();
    assert!(matches!(e, TranslateError::InvalidRequest { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("input[1]") && msg.contains("msg_1"), "{msg}");

    // previous_response_id: the stored conversation, then the new input.
    let (b, pending) = store
        .prepare(
            caller(1),
            body(json!({"model": "m", "previous_response_id": "resp_1", "input": "and now?"})),
            LIMIT,
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert!(v.get("previous_response_id").is_none(), "{v}");
    let texts: Vec<String> = v["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| match &i["content"] {
            Value::String(s) => s.clone(),
            c => c[0]["text"].as_str().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(texts, ["hi", "Hello!", "and now?"]);
    // A chain: the third response's conversation holds all of it.
    pending
        .unwrap()
        .record(&answer("resp_2", "msg_2", "Still here."));
    let (b, _) = store
        .prepare(
            caller(1),
            body(json!({"model": "m", "previous_response_id": "resp_2", "input": "bye"})),
            LIMIT,
        )
        .await
        .unwrap();
    assert_eq!(input_of(&b).as_array().unwrap().len(), 5);
    let e = store
        .prepare(
            caller(2),
            body(json!({"model": "m", "previous_response_id": "resp_2", "input": "x"})),
            LIMIT,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("previous_response_id"), "{e}");
}

#[tokio::test]
async fn store_false_keeps_nothing_and_a_disabled_store_changes_nothing() {
    let store = ResponseStore::default();
    let (_, pending) = store
        .prepare(
            caller(1),
            body(json!({"model": "m", "input": "hi", "store": false})),
            LIMIT,
        )
        .await
        .unwrap();
    assert!(pending.is_none());

    let off = ResponseStore::new(&StoreConfig {
        store_max_bytes: 0,
        ..StoreConfig::default()
    });
    let sent = body(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}));
    let (b, pending) = off.prepare(caller(1), sent.clone(), LIMIT).await.unwrap();
    assert_eq!(b, sent, "translation then refuses the reference itself");
    assert!(pending.is_none());
}

#[tokio::test]
async fn the_store_stays_within_its_bytes() {
    let store = ResponseStore::new(&StoreConfig {
        store_max_bytes: 64 * 1024,
        ..StoreConfig::default()
    });
    let text = "x".repeat(1000);
    for i in 0..1000 {
        let (_, pending) = store
            .prepare(caller(1), body(json!({"model": "m", "input": "hi"})), LIMIT)
            .await
            .unwrap();
        pending
            .unwrap()
            .record(&answer(&format!("resp_{i}"), &format!("msg_{i}"), &text));
    }
    let held = store.weighted_size();
    assert!(held <= 64 * 1024, "{held}");
    assert!(held > 16 * 1024, "recent answers are kept: {held}");
}

#[test]
fn config_is_checked() {
    assert!(StoreConfig::default().validate().is_empty());
    let c = StoreConfig {
        store_ttl: Duration::ZERO,
        ..StoreConfig::default()
    };
    assert_eq!(c.validate()[0].path, "store_ttl");
    let c: Result<StoreConfig, _> = serde_json::from_str(r#"{"store_max": 1}"#);
    assert!(c.is_err(), "unknown keys are refused");
}

#[test]
fn only_unstored_requests_naming_nothing_skip_the_parse() {
    let nothing_to_do = |b: &[u8]| nothing_to_do(b, has_refs(b));
    assert!(nothing_to_do(
        br#"{"model":"m","store": false,"input":"hi"}"#
    ));
    assert!(nothing_to_do(
        br#"{"store":false,"previous_response_id":null}"#
    ));
    assert!(
        !nothing_to_do(br#"{"model":"m","input":"hi"}"#),
        "store defaults to true"
    );
    assert!(!nothing_to_do(
        br#"{"store":false,"previous_response_id":"resp_1"}"#
    ));
    assert!(!nothing_to_do(
        br#"{"store":false,"input":[{"type":"item_reference","id":"msg_1"}]}"#
    ));
    // A nested `store` is not the request's.
    assert!(!nothing_to_do(br#"{"metadata":{"store":false}}"#));
    assert!(!nothing_to_do(b"not json"));
}

#[tokio::test]
async fn what_references_add_counts_against_the_body_limit() {
    let store = ResponseStore::default();
    let (_, pending) = store
        .prepare(caller(1), body(json!({"model": "m", "input": "hi"})), LIMIT)
        .await
        .unwrap();
    pending
        .unwrap()
        .record(&answer("resp_big", "msg_big", &"x".repeat(100_000)));
    // One 100 KB item named 200 times: 20 MB built from a 6 KB body. Refused.
    let refs: Vec<Value> = (0..200)
        .map(|_| json!({"type": "item_reference", "id": "msg_big"}))
        .collect();
    let e = store
        .prepare(
            caller(1),
            body(json!({"model": "m", "input": refs})),
            1024 * 1024,
        )
        .await
        .map(|(b, _)| b.len()) // a failure says how much was built, not what
        .unwrap_err();
    assert!(matches!(e, TranslateError::InvalidRequest { .. }), "{e:?}");
    assert!(e.to_string().contains("body limit"), "{e}");
    // The conversation of a previous response counts too.
    let e = store
        .prepare(
            caller(1),
            body(json!({"model": "m", "input": "x", "previous_response_id": "resp_big"})),
            50_000,
        )
        .await
        .map(|(b, _)| b.len()) // a failure says how much was built, not what
        .unwrap_err();
    assert!(e.to_string().contains("body limit"), "{e}");
    // Under the limit: resolved.
    let (b, _) = store
        .prepare(
            caller(1),
            body(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_big"}]})),
            1024 * 1024,
        )
        .await
        .unwrap();
    assert!(b.len() > 100_000);
}
