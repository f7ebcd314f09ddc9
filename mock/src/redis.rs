//! [`RedisServer`]: a `redis-server` process owned by one test.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a fresh server has to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many fresh ports to try when the server dies at start (another process took the port
/// between our probe and its bind).
const PORT_ATTEMPTS: usize = 3;
/// The tail of the server's output kept for error messages.
const LOG_TAIL: usize = 4096;

const NOT_INSTALLED: &str = "redis-server not found on PATH: install Debian's redis-server \
                             package (apt-get install -y redis-server)";

/// A `redis-server` child process on `127.0.0.1` and a free port, for one test.
///
/// It runs in the foreground without persistence (`--save '' --appendonly no`), so it
/// writes no files, and it is killed and reaped when the value is dropped (a panicking test
/// included). [`stop`](Self::stop) kills it earlier, to test what happens when Redis goes
/// away, and [`restart`](Self::restart) brings it back on the same port, empty.
///
/// # Why one server per test, not one shared per test binary
///
/// A shared instance would live in a `static`, and statics are never dropped: the server
/// would outlive the test binary, and every `cargo test` would leave one more `redis-server`
/// behind. Starting one takes a few milliseconds, so each test owns its own, which also
/// isolates tests without key prefixes and lets a test kill its server without harming others.
///
/// ```no_run
/// use portcullis_mock::RedisServer;
///
/// let redis = RedisServer::start();
/// let url = redis.url(); // redis://127.0.0.1:PORT
/// // ... connect the code under test to `url` ...
/// # drop(url);
/// ```
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If it cannot be started (see [`try_start`](Self::try_start)), with the reason: a test
    /// that needs Redis fails, it is never skipped.
    pub fn start() -> RedisServer {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server on a free port and waits (at most 5 s) until it answers `PING`.
    ///
    /// Fails at once with [`io::ErrorKind::NotFound`] if `redis-server` is not on `PATH`,
    /// naming the package to install; otherwise with the server's own output if it exits or
    /// does not answer in time.
    pub fn try_start() -> io::Result<RedisServer> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match Self::spawn(port) {
                Ok(server) => return Ok(server),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                // Most likely lost the port to someone else: try another one.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// The port it listens on (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server process is running (false after [`stop`](Self::stop), or if it died).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kills the server (SIGKILL, as a crash or a lost host looks) and reaps it. Clients see
    /// their connections drop and new connections refused. Does nothing if already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts a new, empty one on the same port and waits
    /// until it answers `PING`.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let fresh = Self::spawn(self.port)?;
        *self = fresh;
        Ok(())
    }

    fn spawn(port: u16) -> io::Result<RedisServer> {
        Self::spawn_program("redis-server", port)
    }

    fn spawn_program(program: &str, port: u16) -> io::Result<RedisServer> {
        let mut child = Command::new(program)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => io::Error::new(io::ErrorKind::NotFound, NOT_INSTALLED),
                _ => io::Error::new(e.kind(), format!("cannot run redis-server: {e}")),
            })?;
        // Drain the pipes so a chatty server never blocks on a full one; keep the tail for errors.
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            drain(out, log.clone());
        }
        if let Some(err) = child.stderr.take() {
            drain(err, log.clone());
        }
        let mut server = RedisServer {
            port,
            child: Some(child),
            log,
        };
        server.wait_ready()?;
        tracing::debug!(port, "redis-server started");
        Ok(server)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "redis-server on port {} exited at start ({status}): {}",
                        self.port,
                        self.log_tail()
                    )));
                }
            }
            if ping(addr).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}: {}",
                        self.port,
                        self.log_tail()
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_tail(&self) -> String {
        // The drain threads may still be copying the last lines of a dying server.
        thread::sleep(Duration::from_millis(50));
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        match log.trim() {
            "" => "(no output)".to_owned(),
            s => s.to_owned(),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port the kernel says is free right now (bind to port 0, read it, let go).
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// One `PING` over a fresh connection, expecting `+PONG`.
fn ping(addr: SocketAddr) -> io::Result<()> {
    let timeout = Duration::from_millis(200);
    let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    // While loading, Redis answers `-LOADING ...`: not ready yet.
    if line.trim_end() == "+PONG" {
        Ok(())
    } else {
        Err(io::Error::other(format!("PING answered {line:?}")))
    }
}

fn drain(from: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            log.push_str(&line);
            log.push('\n');
            if log.len() > 2 * LOG_TAIL {
                let mut cut = log.len() - LOG_TAIL;
                while !log.is_char_boundary(cut) {
                    cut += 1;
                }
                log.drain(..cut);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(port: u16, command: &[u8]) -> io::Result<String> {
        let mut conn = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        conn.write_all(command)?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line)?;
        Ok(line)
    }

    #[test]
    fn starts_answers_and_is_gone_after_drop() {
        let mut redis = RedisServer::start();
        let port = redis.port();
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
        assert!(redis.is_running());
        assert_eq!(
            roundtrip(port, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n").unwrap(),
            "+OK\r\n"
        );
        // No persistence: nothing to save, nowhere.
        assert_eq!(
            roundtrip(port, b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n")
                .unwrap()
                .trim_end(),
            "*2"
        );
        drop(redis);
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
            "still listening after drop"
        );
    }

    #[test]
    fn stop_and_restart_keep_the_port_and_start_empty() {
        let mut redis = RedisServer::start();
        let port = redis.port();
        roundtrip(port, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n").unwrap();
        redis.stop();
        assert!(!redis.is_running());
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
        redis.stop(); // idempotent

        redis.restart().unwrap();
        assert_eq!(redis.port(), port);
        assert!(redis.is_running());
        assert_eq!(
            roundtrip(port, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap(),
            "$-1\r\n",
            "a restarted server is empty"
        );
    }

    #[test]
    fn two_servers_get_two_ports() {
        let a = RedisServer::start();
        let b = RedisServer::start();
        assert_ne!(a.port(), b.port());
    }

    #[test]
    fn a_missing_binary_names_the_package_at_once() {
        let start = Instant::now();
        let err = RedisServer::spawn_program("redis-server-not-installed-here", 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(err.to_string(), NOT_INSTALLED);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_taken_port_is_reported_with_the_server_output() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = RedisServer::spawn(port).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("port {port}")), "{msg}");
        assert!(msg.contains("exited at start"), "{msg}");
    }
}
