//! Fuzz `validate` with arbitrary bodies for every route and level: it must never panic, and
//! its levels must nest (a stricter level never accepts what a looser one rejects).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_validation::{validate, Level, Route};

fuzz_target!(|body: &[u8]| {
    for route in Route::ALL {
        let mut looser_rejected = false;
        for level in Level::ALL {
            match validate(route, level, body) {
                Ok(meta) => {
                    assert!(
                        !looser_rejected,
                        "{route}: {level} accepted what a looser level rejected"
                    );
                    // Only a Responses request may leave its model to a prompt template.
                    match meta.model {
                        Some(m) => assert!(!m.is_empty()),
                        None => assert_eq!(route, Route::Responses),
                    }
                }
                Err(e) => {
                    assert!(!e.message.is_empty());
                    looser_rejected = true;
                }
            }
        }
    }
});
