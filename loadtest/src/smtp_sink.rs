//! A minimal SMTP server that accepts every message and hands it to a callback (the end of the
//! alarm → email path the load test measures, SPEC ALM-5).
//!
//! It speaks the RFC 5321 subset a relay client needs: `220` greeting, `EHLO` (multi-line `250`
//! advertising `8BITMIME`, `SIZE` and `PIPELINING`) and `HELO`, `MAIL FROM`, `RCPT TO`, `DATA`
//! (`354`, then lines up to a lone `.`, dot-unstuffed), `RSET`, `NOOP`, `VRFY` (`252`) and `QUIT`
//! (`221`); anything else gets `500` or `502`. Commands out of order get `503`. A line longer
//! than the line limit gets `500` (in `DATA`: after the final `.`), a message larger than the size
//! limit `552`. Connections beyond the limit get `421` and are closed, as are idle ones. There is
//! no TLS and no authentication: it is for loopback test setups only.
//!
//! Replies to pipelined commands (RFC 2920) go out together: a reply is held while the client's
//! next command is already read in, and written once none is waiting, as Postfix does. Written
//! one by one on a socket with Nagle on, the second reply of a group would wait for the client's
//! delayed ACK (≈ 40 ms).
//!
//! The module also has the decoding [`text_views`] that lets the caller find plain text in a
//! message however the sender encoded it (quoted-printable, base64, RFC 2047 header words).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Host name the sink announces.
const HOSTNAME: &str = "fleetpulse-loadtest";

/// Bounds of the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkLimits {
    /// Connections served at once; more are answered `421` and closed.
    pub max_connections: usize,
    /// Largest message accepted (after dot-unstuffing, with CRLF line ends), bytes.
    pub max_message_bytes: usize,
    /// Longest command or text line including its CRLF, bytes (RFC 5321 text line limit: 1000).
    pub max_line_bytes: usize,
    /// Most recipients of one message.
    pub max_recipients: usize,
    /// A connection that sends nothing for this long is closed (`421`).
    pub idle_timeout: Duration,
}

impl Default for SinkLimits {
    fn default() -> Self {
        SinkLimits {
            max_connections: 256,
            max_message_bytes: 1 << 20,
            max_line_bytes: 1000,
            max_recipients: 100,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Called with the acceptance instant and the message (dot-unstuffed, CRLF line ends) of every
/// message the sink accepts, before it answers `250`. Keep it short: it runs on the connection's task.
pub type MessageHandler = Arc<dyn Fn(Instant, &[u8]) + Send + Sync>;

/// What the sink has seen.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Connections served.
    pub connections: AtomicU64,
    /// Connections refused because the limit was reached.
    pub refused_connections: AtomicU64,
    /// Messages accepted (handed to the handler).
    pub messages: AtomicU64,
    /// Messages refused for their size or line length.
    pub rejected_messages: AtomicU64,
}

/// A running sink; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct SmtpSink {
    local_addr: SocketAddr,
    stats: Arc<SinkStats>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    /// Listens on `addr` (port 0 picks one) and serves until dropped.
    pub async fn bind(addr: SocketAddr, limits: SinkLimits, handler: MessageHandler) -> io::Result<SmtpSink> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(SinkStats::default());
        let task = tokio::spawn(accept_loop(listener, limits, handler, stats.clone()));
        Ok(SmtpSink { local_addr, stats, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its counters.
    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // The connection tasks live in the accept task's JoinSet and are aborted with it.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, limits: SinkLimits, handler: MessageHandler, stats: Arc<SinkStats>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                        // Best effort and without waiting: the client learns why, or sees a close.
                        let _ = stream.try_write(b"421 Too many connections, try again later\r\n");
                        continue;
                    };
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    let (handler, stats) = (handler.clone(), stats.clone());
                    connections.spawn(async move {
                        if let Err(error) = serve(stream, &limits, &handler, &stats).await {
                            tracing::debug!(%peer, %error, "SMTP sink connection failed");
                        }
                        drop(permit);
                    });
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "SMTP sink: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One line as read by [`read_line`].
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A complete line, now in the buffer without its line end.
    Line,
    /// A line longer than the limit; consumed up to its end and dropped.
    TooLong,
    /// The peer closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one line ending in LF (CRLF or a bare LF) into `line`, without the line end. Reads at
/// most `max` bytes into memory however long the line is.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, line: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
    line.clear();
    let mut total = 0usize;
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(LineRead::Eof);
        }
        let (n, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        total = total.saturating_add(n);
        if total > max {
            too_long = true;
            line.clear();
        } else {
            line.extend_from_slice(&buf[..n]);
        }
        reader.consume(n);
        if complete {
            break;
        }
    }
    if too_long {
        return Ok(LineRead::TooLong);
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(LineRead::Line)
}

/// The state of one connection's mail transaction.
#[derive(Debug, Default)]
struct Transaction {
    recipients: usize,
}

/// Serves one connection until `QUIT`, the peer closes, or it idles too long.
async fn serve(stream: TcpStream, limits: &SinkLimits, handler: &MessageHandler, stats: &SinkStats) -> io::Result<()> {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(256);
    let mut replies = Replies { write, held: Vec::new() };
    replies.send(format!("220 {HOSTNAME} ESMTP sink ready\r\n").as_bytes(), false).await?;
    let mut greeted = false;
    let mut transaction: Option<Transaction> = None;
    loop {
        let Ok(read) =
            tokio::time::timeout(limits.idle_timeout, read_line(&mut reader, &mut line, limits.max_line_bytes)).await
        else {
            replies.send(b"421 Idle for too long, closing\r\n", false).await?;
            return Ok(());
        };
        match read? {
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => {
                replies.send(b"500 Line too long\r\n", command_waiting(&reader)).await?;
                continue;
            }
            LineRead::Line => {}
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            replies.send(b"500 Syntax error, command unrecognized\r\n", command_waiting(&reader)).await?;
            continue;
        };
        let (verb, arg) = match text.split_once(' ') {
            Some((verb, arg)) => (verb, arg.trim()),
            None => (text.trim_end(), ""),
        };
        let reply: std::borrow::Cow<'static, str> = match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if arg.is_empty() => "501 Syntax: EHLO domain\r\n".into(),
            "EHLO" => {
                greeted = true;
                transaction = None;
                format!(
                    "250-{HOSTNAME} greets {}\r\n250-8BITMIME\r\n250-SIZE {}\r\n250 PIPELINING\r\n",
                    printable(arg),
                    limits.max_message_bytes
                )
                .into()
            }
            "HELO" => {
                greeted = true;
                transaction = None;
                format!("250 {HOSTNAME} greets {}\r\n", printable(arg)).into()
            }
            "MAIL" if !greeted => "503 Send EHLO or HELO first\r\n".into(),
            "MAIL" if transaction.is_some() => "503 Nested MAIL command\r\n".into(),
            "MAIL" => match path_argument(arg, "FROM:") {
                None => "501 Syntax: MAIL FROM:<address>\r\n".into(),
                Some(params) if declared_size(params).is_some_and(|size| size > limits.max_message_bytes) => {
                    "552 Message size exceeds fixed maximum message size\r\n".into()
                }
                Some(_) => {
                    transaction = Some(Transaction::default());
                    "250 OK\r\n".into()
                }
            },
            "RCPT" => match (&mut transaction, path_argument(arg, "TO:")) {
                (None, _) => "503 Need MAIL before RCPT\r\n".into(),
                (Some(_), None) => "501 Syntax: RCPT TO:<address>\r\n".into(),
                (Some(t), Some(_)) if t.recipients >= limits.max_recipients => "452 Too many recipients\r\n".into(),
                (Some(t), Some(_)) => {
                    t.recipients += 1;
                    "250 OK\r\n".into()
                }
            },
            "DATA" if !arg.is_empty() => "501 Syntax: DATA\r\n".into(),
            "DATA" => match &transaction {
                None => "503 Need MAIL command\r\n".into(),
                Some(t) if t.recipients == 0 => "503 Need RCPT (recipient)\r\n".into(),
                Some(_) => {
                    // DATA ends a group (RFC 2920): the client waits for this one.
                    replies.send(b"354 End data with <CR><LF>.<CR><LF>\r\n", false).await?;
                    transaction = None;
                    match read_data(&mut reader, &mut line, limits).await? {
                        Data::Eof => return Ok(()),
                        Data::Idle => {
                            replies.send(b"421 Idle for too long, closing\r\n", false).await?;
                            return Ok(());
                        }
                        Data::TooBig => {
                            stats.rejected_messages.fetch_add(1, Ordering::Relaxed);
                            "552 Message size exceeds fixed maximum message size\r\n".into()
                        }
                        Data::LineTooLong => {
                            stats.rejected_messages.fetch_add(1, Ordering::Relaxed);
                            "500 Line too long\r\n".into()
                        }
                        Data::Message(message, accepted) => {
                            handler(accepted, &message);
                            let n = stats.messages.fetch_add(1, Ordering::Relaxed) + 1;
                            format!("250 OK: queued as {n}\r\n").into()
                        }
                    }
                }
            },
            "RSET" => {
                transaction = None;
                "250 OK\r\n".into()
            }
            "NOOP" => "250 OK\r\n".into(),
            "VRFY" => "252 Cannot VRFY user, but will accept message and attempt delivery\r\n".into(),
            "QUIT" => {
                replies.send(format!("221 {HOSTNAME} closing connection\r\n").as_bytes(), false).await?;
                return Ok(());
            }
            "STARTTLS" | "AUTH" | "BDAT" | "EXPN" | "HELP" | "TURN" | "ETRN" => {
                "502 Command not implemented\r\n".into()
            }
            _ => "500 Syntax error, command unrecognized\r\n".into(),
        };
        replies.send(reply.as_bytes(), command_waiting(&reader)).await?;
    }
}

/// A connection's replies, held while the client has pipelined more commands.
struct Replies {
    write: tokio::net::tcp::OwnedWriteHalf,
    /// Replies not written yet; bounded by the commands the reader holds (its 8 KiB buffer).
    held: Vec<u8>,
}

impl Replies {
    /// Adds `reply`; writes everything held unless `more_input` (a command is already waiting).
    async fn send(&mut self, reply: &[u8], more_input: bool) -> io::Result<()> {
        self.held.extend_from_slice(reply);
        if !more_input {
            self.write.write_all(&self.held).await?;
            self.held.clear();
        }
        Ok(())
    }
}

/// Whether a whole command line is already read in behind the one just handled.
fn command_waiting<R: tokio::io::AsyncRead>(reader: &BufReader<R>) -> bool {
    reader.buffer().contains(&b'\n')
}

/// How the text after `DATA` ended.
enum Data {
    /// Accepted at the instant.
    Message(Vec<u8>, Instant),
    TooBig,
    LineTooLong,
    Eof,
    Idle,
}

/// Reads the message text up to the lone `.`, dot-unstuffing it. An oversized message or line is
/// read to its end (so the session stays in step) but not kept.
async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    limits: &SinkLimits,
) -> io::Result<Data> {
    let mut message = Vec::new();
    let (mut too_big, mut too_long) = (false, false);
    loop {
        let Ok(read) = tokio::time::timeout(limits.idle_timeout, read_line(reader, line, limits.max_line_bytes)).await
        else {
            return Ok(Data::Idle);
        };
        match read? {
            LineRead::Eof => return Ok(Data::Eof),
            LineRead::TooLong => {
                too_long = true;
                continue;
            }
            LineRead::Line => {}
        }
        if line == b"." {
            break;
        }
        let content = line.strip_prefix(b".").unwrap_or(line);
        if !too_big {
            if message.len() + content.len() + 2 > limits.max_message_bytes {
                too_big = true;
                message = Vec::new();
            } else {
                message.extend_from_slice(content);
                message.extend_from_slice(b"\r\n");
            }
        }
    }
    let accepted = Instant::now();
    Ok(if too_big {
        Data::TooBig
    } else if too_long {
        Data::LineTooLong
    } else {
        Data::Message(message, accepted)
    })
}

/// For `MAIL FROM:<a> SIZE=10`: the text after the `<path>` if `arg` starts with `keyword`
/// (any case) followed by an angle-bracketed path.
fn path_argument<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start().strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[end + 1..].trim())
}

/// The `SIZE=n` parameter of `MAIL FROM`, if any.
fn declared_size(params: &str) -> Option<usize> {
    params.split_ascii_whitespace().find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.eq_ignore_ascii_case("SIZE").then(|| value.parse().unwrap_or(usize::MAX))
    })
}

/// At most 64 printable ASCII characters of client-supplied text, for echoing it back.
fn printable(s: &str) -> String {
    s.chars().filter(char::is_ascii_graphic).take(64).collect()
}

/// Position of the first `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decoded views of a raw message in which plain text can be searched, whatever the encoding:
/// the whole message with quoted-printable decoded (a no-op on text that is not), the message's
/// base64 blocks decoded, and the header's RFC 2047 encoded words decoded (adjacent words joined).
pub fn text_views(message: &[u8]) -> [Vec<u8>; 3] {
    [qp_decode(message), base64_blocks(message), encoded_words(message)]
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Quoted-printable decoding (RFC 2045): `=` before a line end is a soft line break and is
/// removed with the line end, `=XX` is a byte; anything else is kept.
pub fn qp_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'=' {
            let rest = &input[i + 1..];
            // Transport may leave whitespace between the `=` and the line end.
            let blanks = rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
            match &rest[blanks..] {
                [b'\r', b'\n', ..] => {
                    i += 1 + blanks + 2;
                    continue;
                }
                [b'\n', ..] => {
                    i += 1 + blanks + 1;
                    continue;
                }
                _ => {}
            }
            if let [high, low, ..] = rest
                && let (Some(high), Some(low)) = (hex_value(*high), hex_value(*low))
            {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Lenient base64 decoding: characters outside the alphabet (padding, line ends) are skipped.
pub fn base64_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6 | u32::from(v)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Every run of consecutive lines that look like base64 (at least 4 characters, all of the
/// alphabet or `=`), decoded, one run per line of the result.
fn base64_blocks(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut block = Vec::new();
    let flush = |block: &mut Vec<u8>, out: &mut Vec<u8>| {
        if !block.is_empty() {
            out.extend(base64_decode(block));
            out.push(b'\n');
            block.clear();
        }
    };
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let base64_like =
            line.len() >= 4 && line.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        if base64_like {
            block.extend_from_slice(line);
        } else {
            flush(&mut block, &mut out);
        }
    }
    flush(&mut block, &mut out);
    out
}

/// The RFC 2047 encoded words (`=?charset?B|Q?text?=`) of the message's header, decoded; words
/// separated only by whitespace (folding included) are joined, other runs go on separate lines.
fn encoded_words(message: &[u8]) -> Vec<u8> {
    let end = find(message, b"\r\n\r\n").or_else(|| find(message, b"\n\n")).unwrap_or(message.len());
    let header = &message[..end];
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_run = false;
    while i < header.len() {
        if let Some((decoded, len)) = encoded_word(&header[i..]) {
            out.extend(decoded);
            i += len;
            in_run = true;
            let blanks = header[i..].iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')).count();
            if encoded_word(&header[i + blanks..]).is_some() {
                i += blanks;
            }
            continue;
        }
        if in_run {
            out.push(b'\n');
            in_run = false;
        }
        i += 1;
    }
    out
}

/// The encoded word at the start of `s`, decoded, and its length.
fn encoded_word(s: &[u8]) -> Option<(Vec<u8>, usize)> {
    // RFC 2047 limits a word to 75 characters; allow more, but bound the search.
    const MAX_WORD: usize = 256;
    let rest = s.strip_prefix(b"=?")?;
    let window = &rest[..rest.len().min(MAX_WORD)];
    let charset_len = window.iter().position(|&b| b == b'?')?;
    let (encoding, text_start) = match window.get(charset_len + 1..charset_len + 3)? {
        [e, b'?'] => (e.to_ascii_uppercase(), charset_len + 3),
        _ => return None,
    };
    let text_len = find(&window[text_start..], b"?=")?;
    let text = &window[text_start..text_start + text_len];
    if window[..charset_len].iter().chain(text).any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let decoded = match encoding {
        b'B' => base64_decode(text),
        b'Q' => qp_decode(&text.iter().map(|&b| if b == b'_' { b' ' } else { b }).collect::<Vec<_>>()),
        _ => return None,
    };
    Some((decoded, 2 + text_start + text_len + 2))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::AsyncReadExt;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    use super::*;
    use crate::alarms::{AlarmTracker, RunTag};

    /// A tiny SMTP client: writes lines, reads (multi-line) replies.
    struct Client {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> (Client, u16) {
            let (read, writer) = TcpStream::connect(addr).await.expect("connect").into_split();
            let mut client = Client { reader: BufReader::new(read), writer };
            let (code, _) = client.reply().await;
            (client, code)
        }

        /// One reply: its code and its lines' texts.
        async fn reply(&mut self) -> (u16, Vec<String>) {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                let n = tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut line))
                    .await
                    .expect("a reply in time")
                    .expect("read");
                assert!(n > 0, "connection closed while waiting for a reply");
                assert!(line.ends_with("\r\n"), "{line:?}");
                let code = line[..3].parse().expect("a reply code");
                lines.push(line[4..].trim_end().to_owned());
                if line.as_bytes()[3] == b' ' {
                    return (code, lines);
                }
                assert_eq!(line.as_bytes()[3], b'-', "{line:?}");
            }
        }

        async fn send(&mut self, raw: &str) {
            self.writer.write_all(raw.as_bytes()).await.expect("write");
        }

        async fn cmd(&mut self, line: &str) -> u16 {
            self.send(&format!("{line}\r\n")).await;
            self.reply().await.0
        }

        async fn closed(&mut self) -> bool {
            let mut buf = [0u8; 64];
            matches!(tokio::time::timeout(Duration::from_secs(5), self.reader.read(&mut buf)).await, Ok(Ok(0)))
        }
    }

    type Received = Arc<Mutex<Vec<Vec<u8>>>>;

    async fn sink(limits: SinkLimits) -> (SmtpSink, Received) {
        let received: Received = Arc::default();
        let into = received.clone();
        let handler: MessageHandler = Arc::new(move |_, message: &[u8]| {
            into.lock().expect("lock").push(message.to_vec());
        });
        let sink = SmtpSink::bind("127.0.0.1:0".parse().expect("addr"), limits, handler).await.expect("bind");
        (sink, received)
    }

    #[tokio::test]
    async fn a_session_delivers_a_dot_unstuffed_message() {
        let (sink, received) = sink(SinkLimits::default()).await;
        let (mut c, greeting) = Client::connect(sink.local_addr()).await;
        assert_eq!(greeting, 220);
        c.send("EHLO client.test\r\n").await;
        let (code, lines) = c.reply().await;
        assert_eq!(code, 250);
        assert!(lines.len() > 1 && lines.contains(&"SIZE 1048576".to_owned()), "{lines:?}");
        assert_eq!(c.cmd("MAIL FROM:<alarms@fleetpulse.test> BODY=8BITMIME").await, 250);
        assert_eq!(c.cmd("RCPT TO:<loadtest@example.com>").await, 250);
        assert_eq!(c.cmd("rcpt to: <second@example.com>").await, 250);
        assert_eq!(c.cmd("DATA").await, 354);
        c.send("Subject: hi\r\n\r\n..leading dot\r\n..\r\n...\r\nlast\nbare LF\r\n.\r\n").await;
        let (code, lines) = c.reply().await;
        assert_eq!(code, 250, "{lines:?}");
        assert_eq!(c.cmd("NOOP").await, 250);
        assert_eq!(c.cmd("RSET").await, 250);
        assert_eq!(c.cmd("QUIT").await, 221);
        assert!(c.closed().await);
        let received = received.lock().expect("lock");
        assert_eq!(received.len(), 1);
        assert_eq!(received[0], b"Subject: hi\r\n\r\n.leading dot\r\n.\r\n..\r\nlast\r\nbare LF\r\n");
        assert_eq!(sink.stats().messages.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn commands_out_of_order_or_malformed_are_refused() {
        let (sink, received) = sink(SinkLimits::default()).await;
        let (mut c, _) = Client::connect(sink.local_addr()).await;
        assert_eq!(c.cmd("MAIL FROM:<a@b.c>").await, 503, "no greeting yet");
        assert_eq!(c.cmd("EHLO").await, 501);
        assert_eq!(c.cmd("HELO client.test").await, 250);
        assert_eq!(c.cmd("RCPT TO:<a@b.c>").await, 503, "no MAIL yet");
        assert_eq!(c.cmd("DATA").await, 503, "no MAIL yet");
        assert_eq!(c.cmd("MAIL a@b.c").await, 501);
        assert_eq!(c.cmd("MAIL FROM:a@b.c").await, 501, "the path needs angle brackets");
        assert_eq!(c.cmd("MAIL FROM:<>").await, 250, "the null reverse path is fine");
        assert_eq!(c.cmd("MAIL FROM:<a@b.c>").await, 503, "nested");
        assert_eq!(c.cmd("DATA").await, 503, "no recipient yet");
        assert_eq!(c.cmd("RCPT TO:").await, 501);
        assert_eq!(c.cmd("STARTTLS").await, 502);
        assert_eq!(c.cmd("VRFY x").await, 252);
        assert_eq!(c.cmd("FROB").await, 500);
        assert_eq!(c.cmd("RSET").await, 250);
        assert_eq!(c.cmd("RCPT TO:<a@b.c>").await, 503, "RSET ended the transaction");
        assert!(received.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn pipelined_commands_are_answered_in_order() {
        let (sink, received) = sink(SinkLimits::default()).await;
        let (mut c, _) = Client::connect(sink.local_addr()).await;
        c.send("EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n").await;
        for want in [250, 250, 250, 354] {
            assert_eq!(c.reply().await.0, want);
        }
        c.send("one\r\n.\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\ntwo\r\n.\r\nQUIT\r\n").await;
        for want in [250, 250, 250, 354, 250, 221] {
            assert_eq!(c.reply().await.0, want);
        }
        assert_eq!(*received.lock().expect("lock"), [b"one\r\n".to_vec(), b"two\r\n".to_vec()]);
    }

    #[tokio::test]
    async fn the_replies_to_a_pipelined_group_arrive_in_one_write() {
        let (sink, _) = sink(SinkLimits::default()).await;
        let (mut c, _) = Client::connect(sink.local_addr()).await;
        assert_eq!(c.cmd("EHLO x").await, 250);
        c.send("MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@h.i>\r\nDATA\r\n").await;
        // The first bytes that arrive hold every reply of the group: one write, so no reply waits
        // behind another for the client's ACK.
        let first = tokio::time::timeout(Duration::from_secs(5), c.reader.fill_buf()).await.expect("in time");
        let first = String::from_utf8_lossy(first.expect("read")).into_owned();
        assert_eq!(first.lines().map(|l| &l[..3]).collect::<Vec<_>>(), ["250", "250", "250", "354"], "{first:?}");
    }

    #[tokio::test]
    async fn oversized_messages_and_lines_are_refused_and_the_session_goes_on() {
        let limits = SinkLimits { max_message_bytes: 100, max_line_bytes: 50, ..SinkLimits::default() };
        let (sink, received) = sink(limits).await;
        let (mut c, _) = Client::connect(sink.local_addr()).await;
        assert_eq!(c.cmd("EHLO x").await, 250);
        assert_eq!(c.cmd(&format!("NOOP {}", "x".repeat(60))).await, 500, "command line too long");
        assert_eq!(c.cmd("MAIL FROM:<a@b.c> SIZE=101").await, 552);
        assert_eq!(c.cmd("MAIL FROM:<a@b.c> SIZE=100").await, 250);
        assert_eq!(c.cmd("RCPT TO:<d@e.f>").await, 250);
        assert_eq!(c.cmd("DATA").await, 354);
        c.send(&"0123456789012345678901234567890123456789\r\n".repeat(3)).await;
        assert_eq!(c.cmd(".").await, 552, "126 bytes > 100");
        assert_eq!(c.cmd("MAIL FROM:<a@b.c>").await, 250);
        assert_eq!(c.cmd("RCPT TO:<d@e.f>").await, 250);
        assert_eq!(c.cmd("DATA").await, 354);
        c.send(&format!("short\r\n{}\r\n", "y".repeat(60))).await;
        assert_eq!(c.cmd(".").await, 500, "a text line longer than 50 bytes");
        assert_eq!(c.cmd("MAIL FROM:<a@b.c>").await, 250);
        assert_eq!(c.cmd("RCPT TO:<d@e.f>").await, 250);
        assert_eq!(c.cmd("DATA").await, 354);
        c.send("fits\r\n").await;
        assert_eq!(c.cmd(".").await, 250);
        assert_eq!(*received.lock().expect("lock"), [b"fits\r\n".to_vec()]);
        assert_eq!(sink.stats().rejected_messages.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_refused() {
        let (sink, _) = sink(SinkLimits { max_connections: 1, ..SinkLimits::default() }).await;
        let (mut first, code) = Client::connect(sink.local_addr()).await;
        assert_eq!(code, 220);
        let (mut second, code) = Client::connect(sink.local_addr()).await;
        assert_eq!(code, 421);
        assert!(second.closed().await);
        assert_eq!(first.cmd("QUIT").await, 221);
        assert!(first.closed().await);
        // The slot is free again once the first connection's task has ended.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (mut third, code) = Client::connect(sink.local_addr()).await;
            if code == 220 {
                assert_eq!(third.cmd("QUIT").await, 221);
                break;
            }
            assert!(Instant::now() < deadline, "the slot was never freed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sink.stats().refused_connections.load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (sink, _) = sink(SinkLimits { idle_timeout: Duration::from_millis(100), ..SinkLimits::default() }).await;
        let (mut c, _) = Client::connect(sink.local_addr()).await;
        assert_eq!(c.reply().await.0, 421);
        assert!(c.closed().await);
    }

    #[tokio::test]
    async fn a_quoted_printable_token_is_measured() {
        let tag = RunTag(0xabcd_0123);
        let tracker = Arc::new(AlarmTracker::new(tag, 16));
        let sent = Instant::now();
        tracker.injected(4711, sent);
        tracker.injected(4712, sent);
        let into = tracker.clone();
        let handler: MessageHandler = Arc::new(move |at, message: &[u8]| into.email_accepted(at, message));
        let sink =
            SmtpSink::bind("127.0.0.1:0".parse().expect("addr"), SinkLimits::default(), handler).await.expect("bind");
        let (mut c, _) = Client::connect(sink.local_addr()).await;
        for (line, want) in [("EHLO x", 250), ("MAIL FROM:<a@b.c>", 250), ("RCPT TO:<d@e.f>", 250), ("DATA", 354)] {
            assert_eq!(c.cmd(line).await, want, "{line}");
        }
        // As lettre writes a long text part: a soft line break inside the token, a hyphen
        // escaped, and a line starting with a dot that the client stuffed.
        c.send(concat!(
            "Subject: =?utf-8?b?4pqgIGFsYXJt?=\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Transfer-Encoding: quoted-printable\r\n",
            "\r\n",
            "  Description: lt-alarm-abcd0123=2D47=\r\n",
            "11 (fleetpulse-loadtest injected alarm) =E2=80=94 crash\r\n",
            "..and the end\r\n",
        ))
        .await;
        assert_eq!(c.cmd(".").await, 250);
        assert_eq!(c.cmd("QUIT").await, 221);
        let summary = tracker.summary();
        assert_eq!((summary.injected, summary.emailed, summary.missing, summary.emails), (2, 1, 1, 1), "{summary:?}");
        assert!(summary.latency_us.max > 0);
        assert_eq!(tracker.outstanding(), 1, "4712 is still outstanding, 47 was never injected");
    }

    #[test]
    fn quoted_printable_decoding() {
        assert_eq!(qp_decode(b"a=3Db=\r\nc= \t\r\nd=\ne"), b"a=bcde");
        assert_eq!(qp_decode(b"x=ZZ y= z="), b"x=ZZ y= z=", "malformed escapes are kept");
        assert_eq!(qp_decode("caf=C3=A9".as_bytes()), "café".as_bytes());
    }

    #[test]
    fn base64_decoding() {
        assert_eq!(base64_decode(b"aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(base64_decode(b"aGVs\r\nbG8="), b"hello");
        assert_eq!(base64_decode(b""), b"");
    }

    #[test]
    fn encoded_words_are_joined_across_folding() {
        let header =
            b"Subject: =?UTF-8?B?aGVs?=\r\n =?utf-8?Q?lo_w=C3=B6rld?= plain =?x?q?again?=\r\n\r\n=?utf-8?b?Ym9keQ==?=";
        assert_eq!(encoded_words(header), "hello wörld\nagain".as_bytes(), "the body is not searched");
        assert!(encoded_words(b"Subject: =?utf-8?b?no end").is_empty());
        assert!(encoded_words(b"Subject: =?utf-8?x?abc?=").is_empty());
    }

    #[test]
    fn command_arguments() {
        assert_eq!(path_argument("FROM:<a@b.c> SIZE=5", "FROM:"), Some("SIZE=5"));
        assert_eq!(path_argument("from: <a@b.c>", "FROM:"), Some(""));
        assert_eq!(path_argument("TO:<a@b.c>", "FROM:"), None);
        assert_eq!(path_argument("FROM:<a@b.c", "FROM:"), None);
        assert_eq!(declared_size("BODY=8BITMIME size=42"), Some(42));
        assert_eq!(declared_size("SIZE=lots"), Some(usize::MAX));
        assert_eq!(declared_size(""), None);
        assert_eq!(printable("a b\r\nc"), "abc");
    }
}
