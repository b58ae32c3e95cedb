//! A small HTTP/1.1 file server for neuroglancer on 127.0.0.1: GET, HEAD and CORS
//! preflight, byte ranges, one connection per request. Only the served volumes, the
//! skeletons and the client are reachable; every request path is decoded and checked
//! segment by segment before it touches the file system.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::source::Source;

/// What a route answers, before range and method handling.
pub(crate) enum Reply {
    /// A file inside a served directory (already checked to be inside it).
    File(PathBuf),
    /// Bytes made on request (virtual zarr metadata and chunks, rewritten metadata).
    Body {
        /// The content.
        bytes: Vec<u8>,
        /// Its `Content-Type`.
        content_type: &'static str,
    },
    /// An error status with a short plain-text reason.
    Status(u16, String),
}

impl Reply {
    /// 404: neuroglancer reads a missing zarr chunk as the fill value.
    pub(crate) fn not_found() -> Self {
        Reply::Status(404, "not found".into())
    }

    fn forbidden() -> Self {
        Reply::Status(403, "forbidden path".into())
    }
}

/// Everything the server can answer.
pub(crate) struct Routes {
    /// The volumes, each under `/data/<role name>/`.
    pub(crate) sources: Vec<Source>,
    /// The precomputed skeleton directory under `/skeletons/` (canonical path).
    pub(crate) skeletons: Option<PathBuf>,
    /// The neuroglancer client directory under `/v/<token>/` (canonical path).
    pub(crate) client: Option<PathBuf>,
    /// No per-request log lines.
    pub(crate) quiet: bool,
}

/// The `Content-Type` of a served file, by name: the client's assets must carry theirs
/// (a `.wasm` module or a module script is refused otherwise); zarr and precomputed
/// metadata are JSON.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if matches!(
        name,
        ".zarray" | ".zattrs" | ".zgroup" | "zarr.json" | "info"
    ) {
        return "application/json";
    }
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// A file below `root` (canonical) named by checked segments, refused if it resolves
/// outside `root` (a symlink pointing out) and missing if it is not a regular file.
pub(crate) fn file_reply(root: &Path, rest: &[String]) -> Reply {
    let mut path = root.to_path_buf();
    path.extend(rest);
    let Ok(real) = path.canonicalize() else {
        return gzip_sibling(root, &path);
    };
    if !real.starts_with(root) {
        return Reply::forbidden();
    }
    if !real.is_file() {
        return Reply::not_found();
    }
    Reply::File(real)
}

/// `NAME.gz` in place of a missing `NAME`, decompressed: precomputed volumes written with
/// gzip store their chunks so (CloudVolume's convention), which a cloud bucket serves as
/// `NAME` with `Content-Encoding: gzip`; the client asks for `NAME`.
fn gzip_sibling(root: &Path, path: &Path) -> Reply {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    let Ok(real) = PathBuf::from(name).canonicalize() else {
        return Reply::not_found();
    };
    if !real.starts_with(root) {
        return Reply::forbidden();
    }
    let mut bytes = vec![];
    match File::open(&real).and_then(|f| flate2::read::GzDecoder::new(f).read_to_end(&mut bytes)) {
        Ok(_) => Reply::Body {
            bytes,
            content_type: "application/octet-stream",
        },
        Err(e) => Reply::Status(500, format!("{}: not gzip: {e}", real.display())),
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded segments of a request path, or the status refusing it. A segment that is
/// empty (`//`, except a final `/`), `.` or `..`, or holds `/`, `\` or NUL once decoded is
/// refused with 403: it could name something outside the served directories.
pub(crate) fn path_segments(target: &str) -> Result<Vec<String>, u16> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    // Anything but an origin-form path (an absolute URL, `*`) names nothing served here.
    let Some(path) = path.strip_prefix('/') else {
        return Err(403);
    };
    if path.contains('\\') {
        return Err(403);
    }
    let raw: Vec<&str> = path.split('/').collect();
    let last = raw.len() - 1;
    let mut segments = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let decoded = percent_decode(s).ok_or(400u16)?;
        if decoded.is_empty() {
            if i == last {
                continue;
            }
            return Err(403);
        }
        if decoded == "." || decoded == ".." || decoded.contains(['/', '\\', '\0']) {
            return Err(403);
        }
        segments.push(decoded);
    }
    Ok(segments)
}

/// A `Range` header's meaning for a body of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// No range, or one this server ignores (several ranges, malformed): the whole body.
    Full,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// A well-formed range that selects nothing: 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` (RFC 9110): an invalid header is ignored,
/// as the RFC allows.
pub(crate) fn parse_range(header: Option<&str>, len: u64) -> Range {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Range::Full,
        (true, false) => match num(b) {
            Some(0) => Range::Unsatisfiable,
            Some(_) if len == 0 => Range::Unsatisfiable,
            Some(n) => Range::Part(len.saturating_sub(n), len - 1),
            None => Range::Full,
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return Range::Full;
            };
            let end = if b.is_empty() { Some(u64::MAX) } else { num(b) };
            match end {
                Some(end) if end >= start => {
                    if start >= len {
                        Range::Unsatisfiable
                    } else {
                        Range::Part(start, end.min(len - 1))
                    }
                }
                _ => Range::Full,
            }
        }
    }
}

/// The reason phrase of a status code.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// Headers every response carries: neuroglancer may be loaded from another origin (the
/// public app) and must be allowed to read the data; nothing here should be cached,
/// since the files can change between runs on the same port.
const COMMON_HEADERS: &str = "Access-Control-Allow-Origin: *\r\n\
     Access-Control-Expose-Headers: Content-Length, Content-Range, Accept-Ranges\r\n\
     Cache-Control: no-cache\r\nConnection: close\r\n";

/// A parsed request head.
struct Request {
    /// `GET`, `HEAD`, …
    method: String,
    /// The request target as sent (still percent-encoded).
    target: String,
    /// The `Range` header.
    range: Option<String>,
    /// The `Access-Control-Request-Headers` of a preflight.
    preflight_headers: Option<String>,
}

/// Longest request head accepted: neuroglancer's requests are a few hundred bytes.
const MAX_HEAD: u64 = 32 * 1024;

/// Reads the request line and headers; `Err` carries the status to answer.
fn read_request(stream: &TcpStream) -> Result<Request, u16> {
    let mut reader = BufReader::new(stream.take(MAX_HEAD));
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|_| 400u16)? == 0 {
        return Err(400);
    }
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(400);
    };
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        range: None,
        preflight_headers: None,
    };
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_err(|_| 400u16)? == 0 {
            // The size limit cut the head short.
            return Err(431);
        }
        let header = header.trim_end();
        if header.is_empty() {
            return Ok(request);
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim().to_string();
            if name.eq_ignore_ascii_case("range") {
                request.range = Some(value);
            } else if name.eq_ignore_ascii_case("access-control-request-headers") {
                request.preflight_headers = Some(value);
            }
        }
    }
}

impl Routes {
    /// The reply for checked path segments.
    fn route(&self, segments: &[String]) -> Reply {
        match segments {
            [data, name, rest @ ..] if data == "data" => self
                .sources
                .iter()
                .find(|s| s.role.name() == name)
                .map_or_else(Reply::not_found, |s| s.reply(rest)),
            [skeletons, rest @ ..] if skeletons == "skeletons" => match &self.skeletons {
                Some(dir) => file_reply(dir, rest),
                None => Reply::not_found(),
            },
            // The Python package's client finds its token in the path; any token works.
            [v, _token, rest @ ..] if v == "v" => match &self.client {
                Some(dir) if rest.is_empty() => file_reply(dir, &["index.html".to_string()]),
                Some(dir) => file_reply(dir, rest),
                None => Reply::not_found(),
            },
            _ => Reply::not_found(),
        }
    }

    /// Answers one connection and logs it.
    fn handle(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
        let (method, target, status) = match read_request(&stream) {
            Ok(request) => {
                let status = self.respond(&mut stream, &request);
                (request.method, request.target, status)
            }
            Err(status) => {
                let _ = send_status(&mut stream, status, "bad request", true);
                ("-".to_string(), "-".to_string(), status)
            }
        };
        let _ = stream.flush();
        if !self.quiet {
            // Control characters from the request would garble the terminal.
            let target: String = target.chars().filter(|c| !c.is_control()).collect();
            // Not eprintln!: a closed stderr must not take the server down.
            let _ = writeln!(std::io::stderr(), "{method} {target} {status}");
        }
    }

    /// Writes the response to a parsed request; returns its status.
    fn respond(&self, stream: &mut TcpStream, request: &Request) -> u16 {
        let head_only = match request.method.as_str() {
            "GET" => false,
            "HEAD" => true,
            "OPTIONS" => {
                let allow = request.preflight_headers.as_deref().unwrap_or("*");
                let allow: String = allow.chars().filter(|c| !c.is_control()).collect();
                let head = format!(
                    "HTTP/1.1 204 No Content\r\n{COMMON_HEADERS}\
                     Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n\
                     Access-Control-Allow-Headers: {allow}\r\n\
                     Access-Control-Allow-Private-Network: true\r\n\
                     Access-Control-Max-Age: 600\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes());
                return 204;
            }
            _ => {
                let _ = send_status(stream, 405, "use GET or HEAD", false);
                return 405;
            }
        };
        let reply = match path_segments(&request.target) {
            Ok(segments) => self.route(&segments),
            Err(status) => Reply::Status(status, reason(status).to_string()),
        };
        match reply {
            Reply::Status(status, message) => {
                let _ = send_status(stream, status, &message, head_only);
                status
            }
            Reply::Body {
                bytes,
                content_type,
            } => send_body(
                stream,
                &mut std::io::Cursor::new(&bytes),
                bytes.len() as u64,
                content_type,
                request.range.as_deref(),
                head_only,
            ),
            Reply::File(path) => match File::open(&path).and_then(|f| {
                let len = f.metadata()?.len();
                Ok((f, len))
            }) {
                Ok((mut file, len)) => send_body(
                    stream,
                    &mut file,
                    len,
                    content_type(&path),
                    request.range.as_deref(),
                    head_only,
                ),
                Err(_) => {
                    let _ = send_status(stream, 404, "not found", head_only);
                    404
                }
            },
        }
    }
}

/// Sends a short plain-text status response.
fn send_status(
    stream: &mut TcpStream,
    status: u16,
    message: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let body = format!("{status} {}: {message}\n", reason(status));
    let allow = if status == 405 {
        "Allow: GET, HEAD, OPTIONS\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\n{COMMON_HEADERS}{allow}Content-Type: text/plain; \
         charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    Ok(())
}

/// Sends `len` bytes of `body` (or the requested range of them); returns the status.
fn send_body<B: Read + Seek>(
    stream: &mut TcpStream,
    body: &mut B,
    len: u64,
    content_type: &str,
    range: Option<&str>,
    head_only: bool,
) -> u16 {
    let (status, start, count, content_range) = match parse_range(range, len) {
        Range::Full => (200, 0, len, String::new()),
        Range::Part(a, b) => (
            206,
            a,
            b - a + 1,
            format!("Content-Range: bytes {a}-{b}/{len}\r\n"),
        ),
        Range::Unsatisfiable => {
            let head = format!(
                "HTTP/1.1 416 {}\r\n{COMMON_HEADERS}Content-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\n\r\n",
                reason(416)
            );
            let _ = stream.write_all(head.as_bytes());
            return 416;
        }
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\n{COMMON_HEADERS}Content-Type: {content_type}\r\n\
         Content-Length: {count}\r\nAccept-Ranges: bytes\r\n{content_range}\r\n",
        reason(status)
    );
    if stream.write_all(head.as_bytes()).is_err() || head_only {
        return status;
    }
    if body.seek(SeekFrom::Start(start)).is_ok() {
        let _ = std::io::copy(&mut body.take(count), stream);
    }
    status
}

/// Most connections answered at once: neuroglancer opens a handful; more would only be
/// a runaway local client.
const MAX_CONNECTIONS: usize = 64;

/// Serves `routes` on `listener` until `stop` is set (by SIGINT/SIGTERM), then waits for
/// the requests in flight (up to 10 s). Returns the number of connections served.
pub(crate) fn serve(listener: TcpListener, routes: Arc<Routes>, stop: &AtomicBool) -> usize {
    let active = Arc::new(AtomicUsize::new(0));
    let mut served = 0;
    // Non-blocking accepts let the loop see `stop` a few times a second.
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                while active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                    std::thread::sleep(Duration::from_millis(5));
                }
                served += 1;
                active.fetch_add(1, Ordering::AcqRel);
                let (routes, active) = (routes.clone(), active.clone());
                std::thread::spawn(move || {
                    routes.handle(stream);
                    active.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(10);
    while active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Range::Part(0, 3));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Range::Part(4, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Range::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Range::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), Range::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Range::Full);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Range::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Range::Full);
        assert_eq!(parse_range(None, 10), Range::Full);
    }

    #[test]
    fn paths_are_checked_after_decoding() {
        let ok = |t: &str| path_segments(t).unwrap();
        assert_eq!(ok("/data/image/0.0.0"), ["data", "image", "0.0.0"]);
        assert_eq!(ok("/v/em/"), ["v", "em"]);
        assert_eq!(ok("/data/image/.zarray?x=1"), ["data", "image", ".zarray"]);
        assert_eq!(ok("/a%20b"), ["a b"]);
        for bad in [
            "/data/image/../x",
            "/data/image/%2e%2e/x",
            "/data/image/%2E%2E/x",
            "/data/image/a%2Fb",
            "/data/image//etc/passwd",
            "/data/image/%2fetc%2fpasswd",
            "/data\\image",
            "/data/image/a%5cb",
            "/data/./image",
            "/data/image/a%00",
        ] {
            assert_eq!(path_segments(bad), Err(403), "{bad}");
        }
        assert_eq!(path_segments("http://x/etc/passwd"), Err(403));
        assert_eq!(path_segments("/data/%zz"), Err(400));
        assert_eq!(path_segments("/data/%ff"), Err(400));
    }
}
