//! Request bodies a client chose: `portcullis_core::meta::parse` (what the rate limiter, dedup
//! and router read when validation is not in front of them) and
//! `portcullis_validation::validate` on every route and level.
//!
//! Invariants checked, beyond "no panic":
//! - `meta::parse` agrees with `serde_json::Value` wherever serde_json parses the body: `Some`
//!   exactly for an object, with its (last) `model` if that is a string and `stream` exactly
//!   when it is `true`;
//! - validation levels nest: whatever `strict` accepts `moderate` accepts, and whatever that
//!   accepts `lenient` accepts;
//! - an accepted body is a JSON object whose `model` and `stream` are the ones the gateway
//!   routes on (the same as `meta::parse` and `serde_json` read: duplicate keys cannot make
//!   validation and the upstream see different models);
//! - an accepted body has a non-empty `model` (only a Responses request may leave it to a
//!   stored prompt);
//! - a refusal names a field or the body, with a message.
//!
//! `layers/validation/fuzz` fuzzes `validate` alone; its seeds (one valid request per route)
//! seed this target too (see `.ci/run`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::meta;
use portcullis_validation::{validate, Level, Route};
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let parsed = meta::parse(body);
    let value = serde_json::from_slice::<Value>(body).ok();
    if let Some(v) = &value {
        match (v, &parsed) {
            (Value::Object(_), Some(m)) => {
                assert_eq!(m.model.as_deref(), v["model"].as_str());
                assert_eq!(m.stream, v["stream"] == Value::Bool(true));
            }
            (Value::Object(_), None) => panic!("an object serde_json reads is not read"),
            (_, Some(_)) => panic!("a non-object was read as a request"),
            (_, None) => {}
        }
    }

    for route in Route::ALL {
        // Loosest first.
        let verdicts = Level::ALL.map(|l| validate(route, l, body));
        for pair in verdicts.windows(2) {
            assert!(
                pair[0].is_ok() || pair[1].is_err(),
                "{route:?}: a stricter level accepted what a looser one refused"
            );
        }
        for verdict in &verdicts {
            match verdict {
                Ok(m) => {
                    // Only a Responses request may leave its model to a prompt template.
                    match &m.model {
                        Some(model) => assert!(!model.is_empty()),
                        None => assert_eq!(route, Route::Responses),
                    }
                    let v = value.as_ref().expect("accepted bodies are JSON");
                    assert!(v.is_object());
                    assert_eq!(m.model.as_deref(), v["model"].as_str(), "{route:?}");
                    assert_eq!(m.stream, v["stream"] == Value::Bool(true));
                    assert_eq!(parsed.as_ref(), Some(m), "meta::parse reads the same");
                }
                Err(e) => assert!(!e.message.is_empty()),
            }
        }
    }
});
