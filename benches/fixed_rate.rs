//! Run with: cargo run --release --example fixed_rate -- URL RATE SECONDS [stream]
//!
//! Open-loop latency at a fixed request rate, for benches/load.sh ("added p99 at 200 req/s").
//! wrk sends as fast as it can, so its percentiles measure a saturated server; this sends one
//! chat request every 1/RATE s whatever the answers do, and measures each from its scheduled
//! start to the last byte of its body (no coordinated omission: a slow answer does not delay
//! the next request's clock). Every request has its own prompt, so dedup never coalesces them.
//!
//! Prints `RESULT <sent> <errors> <p50 ms> <p99 ms> <max ms>`.

use std::time::{Duration, Instant};

use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fixed_rate URL RATE SECONDS [stream]";
    let url: Uri = args.next().ok_or(usage)?.parse()?;
    let rate: f64 = args.next().ok_or(usage)?.parse()?;
    let seconds: f64 = args.next().ok_or(usage)?.parse()?;
    let stream = args.next().is_some_and(|a| a == "stream");
    if rate <= 0.0 || seconds <= 0.0 {
        return Err(usage.into());
    }
    let client: Client<HttpConnector, Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let total = (rate * seconds) as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let body = format!(
            r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[{{"role":"user","content":"fixed rate {i}"}}]}}"#
        );
        let req = Request::post(url.clone())
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-bench")
            .body(Full::new(body.into()))?;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let ok = match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    resp.into_body().collect().await.is_ok() && status.is_success()
                }
                Err(_) => false,
            };
            (due.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0u64;
    for t in tasks {
        let (latency, ok) = t.await?;
        if !ok {
            errors += 1;
        }
        latencies.push(latency);
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "RESULT {} {} {:.3} {:.3} {:.3}",
        latencies.len(),
        errors,
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
