//! The response cache in Redis (`--cache-config redis,host=H`), shared by
//! every replica that points at the same server.
//!
//! An entry's Redis key is `quiver:cache:` and the SHA-256 of the engine's
//! cache key (model, version, identity, each input's name, datatype, shape
//! and bytes, the requested outputs): one replica's answer is another's hit,
//! and no client can forge a key that collides with another's request. The
//! value is the answer's tensors in a small binary layout, checked when
//! read: a value that does not decode is a miss.
//!
//! Redis is a cache, never a dependency: every command has a deadline
//! (`wait_timeout_ms`), and a failure (refused, timed out, an error reply)
//! is a miss for a lookup and nothing for a store, counted in
//! `quiver_response_cache_errors_total`. After a failed connection the cache
//! is not tried again for a second, so a Redis that is down costs requests
//! nothing but a clock read. The client speaks RESP2 over a small pool of
//! connections (`connections`).
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_engine::cache::{Key, ResponseCache};
use quiver_engine::model::BoxFuture;
use quiver_runtimes::{DataType, Tensor};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// `--cache-config redis,KEY=VALUE` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// Deadline of each command, connecting included.
    pub wait_timeout: Duration,
    /// Idle connections kept for reuse.
    pub connections: usize,
    /// Entries expire after this long (`ttl_seconds`; 0: never, Redis's
    /// own eviction policy decides).
    pub ttl: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            host: "localhost".into(),
            port: 6379,
            user: None,
            password: None,
            db: 0,
            wait_timeout: Duration::from_millis(200),
            connections: 8,
            ttl: Duration::ZERO,
        }
    }
}

impl Settings {
    /// One `redis,KEY=VALUE` of `--cache-config`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let number = |what: &str| -> Result<u64, String> {
            value
                .trim()
                .parse()
                .map_err(|_| format!("{what} must be a whole number, not '{value}'"))
        };
        match key {
            "host" => self.host = value.to_owned(),
            "port" => self.port = u16::try_from(number("port")?).map_err(|_| "port must be below 65536".to_string())?,
            "user" | "username" => self.user = Some(value.to_owned()),
            "password" => self.password = Some(value.to_owned()),
            "db" => self.db = number("db")? as u32,
            "wait_timeout_ms" => self.wait_timeout = Duration::from_millis(number("wait_timeout_ms")?.max(1)),
            "connections" => self.connections = number("connections")?.max(1) as usize,
            "ttl_seconds" => self.ttl = Duration::from_secs(number("ttl_seconds")?),
            _ => {
                return Err(format!(
                    "unknown redis setting '{key}' (host, port, user, password, db, wait_timeout_ms, connections, ttl_seconds)"
                ));
            }
        }
        Ok(())
    }
}

/// How long a failed connection keeps the cache from being tried.
const DOWN_PAUSE: Duration = Duration::from_secs(1);

pub struct RedisCache {
    settings: Settings,
    idle: Mutex<Vec<BufStream<TcpStream>>>,
    /// Until when Redis is taken for down.
    down_until: Mutex<Option<Instant>>,
}

impl RedisCache {
    pub fn new(settings: Settings) -> RedisCache {
        RedisCache {
            settings,
            idle: Mutex::default(),
            down_until: Mutex::default(),
        }
    }

    fn is_down(&self) -> bool {
        let down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down.is_some_and(|until| Instant::now() < until)
    }

    /// A pooled connection, or a new one (authenticated, its database
    /// selected).
    async fn connection(&self) -> Result<BufStream<TcpStream>, String> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        let s = &self.settings;
        let stream = TcpStream::connect((s.host.as_str(), s.port)).await;
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + DOWN_PAUSE);
                return Err(format!("cannot connect to {}:{}: {e}", s.host, s.port));
            }
        };
        let _ = stream.set_nodelay(true);
        let mut c = BufStream::new(stream);
        if let Some(password) = &s.password {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &s.user {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            expect_ok(command(&mut c, &auth).await?)?;
        }
        if s.db != 0 {
            let db = s.db.to_string();
            expect_ok(command(&mut c, &[b"SELECT", db.as_bytes()]).await?)?;
        }
        Ok(c)
    }

    /// Runs one command within the deadline; the connection goes back to
    /// the pool only after a complete reply.
    async fn call(&self, args: &[&[u8]]) -> Result<Reply, String> {
        if self.is_down() {
            return Err("redis was unreachable less than a second ago".into());
        }
        let run = async {
            let mut c = self.connection().await?;
            let reply = command(&mut c, args).await?;
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.settings.connections {
                idle.push(c);
            }
            Ok(reply)
        };
        match tokio::time::timeout(self.settings.wait_timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.settings.wait_timeout)),
        }
    }

    fn failed(op: &'static str, why: &str) {
        metrics::counter!(crate::telemetry::RESPONSE_CACHE_ERRORS, "op" => op).increment(1);
        tracing::debug!(op, error = why, "response cache: redis failed");
    }
}

/// The Redis key of an engine cache key.
fn redis_key(key: &Key<'_>) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(key.model.as_bytes());
    field(&key.version.to_le_bytes());
    field(&key.identity.to_le_bytes());
    for t in key.inputs {
        field(t.name.as_bytes());
        field(t.datatype.as_str().as_bytes());
        let shape: Vec<u8> = t.shape.iter().flat_map(|d| d.to_le_bytes()).collect();
        field(&shape);
        field(&t.data);
    }
    for o in key.outputs {
        field(o.name.as_bytes());
        let k = o.classification.as_ref().and_then(|k| k.as_i64()).unwrap_or(-1);
        field(&k.to_le_bytes());
    }
    let digest = h.finalize();
    let mut out = b"quiver:cache:".to_vec();
    for b in digest {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out
}

/// The answer's tensors as stored: per tensor its name, datatype, shape and
/// bytes, each length-prefixed.
fn encode(outputs: &[Tensor]) -> Vec<u8> {
    let size: usize = outputs
        .iter()
        .map(|t| 32 + t.name.len() + t.shape.len() * 8 + t.data.len())
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(outputs.len() as u32).to_le_bytes());
    for t in outputs {
        let datatype = t.datatype.as_str();
        out.extend_from_slice(&(t.name.len() as u32).to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out.push(datatype.len() as u8);
        out.extend_from_slice(datatype.as_bytes());
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in &t.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&t.data);
    }
    out
}

/// Reads back what [`encode`] wrote; `None` for anything else.
fn decode(value: Bytes) -> Option<Vec<Tensor>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<Bytes> {
        let end = at.checked_add(n).filter(|&e| e <= value.len())?;
        let part = value.slice(at..end);
        at = end;
        Some(part)
    };
    let u32_of = |b: Bytes| u32::from_le_bytes(b[..].try_into().unwrap_or_default()) as usize;
    let count = u32_of(take(4)?);
    let mut outputs = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name_len = u32_of(take(4)?);
        let name = String::from_utf8(take(name_len)?.to_vec()).ok()?;
        let dt_len = take(1)?[0] as usize;
        let datatype = DataType::parse(std::str::from_utf8(&take(dt_len)?).ok()?)?;
        let rank = u32_of(take(4)?);
        let mut shape = Vec::with_capacity(rank.min(16));
        for _ in 0..rank {
            shape.push(i64::from_le_bytes(take(8)?[..].try_into().ok()?));
        }
        let len = u64::from_le_bytes(take(8)?[..].try_into().ok()?) as usize;
        let data = take(len)?;
        outputs.push(Tensor {
            name,
            datatype,
            shape,
            data,
        });
    }
    (at == value.len()).then_some(outputs)
}

/// A reply, as far as the cache reads them.
enum Reply {
    Ok,
    Nil,
    Bulk(Bytes),
    Other,
}

fn expect_ok(reply: Reply) -> Result<(), String> {
    match reply {
        Reply::Ok => Ok(()),
        _ => Err("unexpected reply".into()),
    }
}

/// Writes one command (an array of bulk strings) and reads its reply.
async fn command(c: &mut BufStream<TcpStream>, args: &[&[u8]]) -> Result<Reply, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut head = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        head.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        c.write_all(&head).await.map_err(io)?;
        c.write_all(a).await.map_err(io)?;
        head.clear();
        head.extend_from_slice(b"\r\n");
    }
    c.write_all(&head).await.map_err(io)?;
    c.flush().await.map_err(io)?;
    let mut line = Vec::new();
    c.read_until(b'\n', &mut line).await.map_err(io)?;
    let text = std::str::from_utf8(&line).map_err(|_| "reply is not text".to_string())?;
    let text = text.trim_end();
    match text.as_bytes().first() {
        Some(b'+') if text == "+OK" => Ok(Reply::Ok),
        Some(b'+') | Some(b':') => Ok(Reply::Other),
        Some(b'-') => Err(format!("redis: {}", &text[1..])),
        Some(b'$') => {
            let len: i64 = text[1..].parse().map_err(|_| "bad bulk length".to_string())?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let mut data = vec![0u8; len as usize + 2];
            c.read_exact(&mut data).await.map_err(io)?;
            data.truncate(len as usize);
            Ok(Reply::Bulk(Bytes::from(data)))
        }
        _ => Err(format!("unexpected reply '{text}'")),
    }
}

impl ResponseCache for RedisCache {
    fn get<'a>(&'a self, key: &'a Key<'a>) -> BoxFuture<'a, Option<Vec<Tensor>>> {
        Box::pin(async move {
            let k = redis_key(key);
            match self.call(&[b"GET", &k]).await {
                Ok(Reply::Bulk(value)) => {
                    let found = decode(value);
                    if found.is_none() {
                        Self::failed("get", "a value that does not decode");
                    }
                    found
                }
                Ok(_) => None,
                Err(why) => {
                    Self::failed("get", &why);
                    None
                }
            }
        })
    }

    fn put<'a>(&'a self, key: &'a Key<'a>, outputs: &'a [Tensor]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let k = redis_key(key);
            let value = encode(outputs);
            let ttl = self.settings.ttl.as_millis().to_string();
            let result = match self.settings.ttl.is_zero() {
                true => self.call(&[b"SET", &k, &value]).await,
                false => self.call(&[b"SET", &k, &value, b"PX", ttl.as_bytes()]).await,
            };
            if let Err(why) = result.and_then(expect_ok) {
                Self::failed("put", &why);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_anything_else_is_a_miss() {
        let outputs = vec![
            Tensor {
                name: "y".into(),
                datatype: DataType::Fp32,
                shape: vec![2, 2],
                data: Bytes::from_static(&[0u8; 16]),
            },
            Tensor {
                name: "label".into(),
                datatype: DataType::Bytes,
                shape: vec![1],
                data: Bytes::from_static(b"\x03\x00\x00\x00cat"),
            },
        ];
        let value = Bytes::from(encode(&outputs));
        let back = decode(value.clone()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[1].name.as_str(), back[1].datatype), ("label", DataType::Bytes));
        assert_eq!(back[0].shape, vec![2, 2]);
        assert_eq!(back[1].data, outputs[1].data);
        for cut in [0, 3, 10, value.len() - 1] {
            assert!(decode(value.slice(..cut)).is_none(), "cut at {cut}");
        }
        let mut longer = value.to_vec();
        longer.push(0);
        assert!(decode(Bytes::from(longer)).is_none());
        assert!(decode(Bytes::from_static(b"\xff\xff\xff\xff")).is_none());
    }

    #[test]
    fn settings_are_read_as_triton_writes_them() {
        let mut s = Settings::default();
        s.set("host", "cache.svc").unwrap();
        s.set("port", "6380").unwrap();
        s.set("wait_timeout_ms", "50").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.wait_timeout),
            ("cache.svc", 6380, Duration::from_millis(50))
        );
        assert!(s.set("port", "70000").is_err());
        assert!(
            s.set("colour", "red")
                .unwrap_err()
                .contains("unknown redis setting 'colour'")
        );
    }
}
