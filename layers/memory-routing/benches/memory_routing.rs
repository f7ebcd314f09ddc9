//! Decision time with 1, 10 and 100 patterns: the router (a `RegexSet` per header) against a
//! naive loop over the patterns' regexes, in the worst cases (only the last pattern matches;
//! nothing matches).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};
use portcullis_memory_routing::{Config, MemoryRouter, Pattern};
use regex::{Regex, RegexBuilder};

fn config(n: usize) -> Config {
    Config {
        patterns: (0..n)
            .map(|i| Pattern {
                header: "user-agent".into(),
                pattern: format!(r"^Tool{i}Client/\d+"),
                user_id: format!("user-{i}"),
            })
            .collect(),
        ..Config::default()
    }
}

fn ua(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_str(value).unwrap());
    h
}

/// What the router replaces: try each pattern in order.
struct Naive(Vec<(HeaderName, Regex, String)>);

impl Naive {
    fn new(c: &Config) -> Self {
        Self(
            c.patterns
                .iter()
                .map(|p| {
                    let re = RegexBuilder::new(&p.pattern)
                        .case_insensitive(true)
                        .build()
                        .unwrap();
                    (
                        HeaderName::from_bytes(p.header.as_bytes()).unwrap(),
                        re,
                        p.user_id.clone(),
                    )
                })
                .collect(),
        )
    }

    fn decide<'a>(&'a self, h: &HeaderMap) -> Option<&'a str> {
        self.0.iter().find_map(|(name, re, id)| {
            h.get_all(name)
                .iter()
                .any(|v| re.is_match(&String::from_utf8_lossy(v.as_bytes())))
                .then_some(id.as_str())
        })
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    for n in [1usize, 10, 100] {
        let cfg = config(n);
        let router = MemoryRouter::new(&cfg).unwrap();
        let naive = Naive::new(&cfg);
        let last = ua(&format!(
            "Tool{}Client/17 (Linux; amd64) OpenJDK/21.0.2 some-plugin/2024.3",
            n - 1
        ));
        let none = ua("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)");
        assert_eq!(&*router.decide(&last).user_id, format!("user-{}", n - 1));
        assert!(router.decide(&none).is_default);
        assert_eq!(
            naive.decide(&last),
            Some(format!("user-{}", n - 1).as_str())
        );

        for (case, headers) in [("last_matches", &last), ("no_match", &none)] {
            g.bench_with_input(
                BenchmarkId::new(format!("router/{case}"), n),
                headers,
                |b, h| b.iter(|| router.decide(black_box(h))),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("naive/{case}"), n),
                headers,
                |b, h| b.iter(|| naive.decide(black_box(h)).is_some()),
            );
        }
    }
    // The explicit id short-circuits the patterns.
    let router = MemoryRouter::new(&config(100)).unwrap();
    let mut h = ua("Tool99Client/1");
    h.insert("x-memory-user-id", HeaderValue::from_static("alice"));
    g.bench_function("router/explicit/100", |b| {
        b.iter(|| router.decide(black_box(&h)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
