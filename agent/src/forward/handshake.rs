//! The shared-key handshake, both sides, as Fluentd 1.15's in_forward and
//! out_forward (`out_forward/handshake_protocol.rb`) do it:
//!
//! ```text
//! server -> HELO ["HELO", {"nonce": bin, "auth": bin (salt; empty without user auth), "keepalive": bool}]
//! client -> PING ["PING", self_hostname, shared_key_salt,
//!                 hex(sha512(shared_key_salt + self_hostname + nonce + shared_key)),
//!                 username, hex(sha512(auth_salt + username + password))]   ("", "" without user auth)
//! server -> PONG ["PONG", true, "", self_hostname,
//!                 hex(sha512(shared_key_salt + self_hostname + nonce + shared_key))]
//!            or  ["PONG", false, reason, "", ""]
//! ```
//!
//! Each side proves it knows the shared key with a digest over the other
//! side's random value (the server's nonce, the client's salt) and its own
//! hostname. Digests are compared in constant time.

use sha2::{Digest, Sha512};

/// A handshake message that is not what it claims to be: which one, and
/// why. (Its own type, not `message::MessageError`, which wraps it: the
/// message module reads handshake messages, so this one cannot import it.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} message: {why}")]
pub struct Malformed {
    pub kind: &'static str,
    pub why: &'static str,
}

use super::msgpack::{self, Value};

/// The server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helo {
    pub nonce: Vec<u8>,
    /// The salt for the user's password digest; empty when the server asks
    /// for no username and password.
    pub auth: Vec<u8>,
    /// Whether the server keeps the connection open after an ack
    /// (fluent-bit does not say: true).
    pub keepalive: bool,
}

/// The client's proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub hostname: Vec<u8>,
    pub shared_key_salt: Vec<u8>,
    pub shared_key_digest: Vec<u8>,
    pub username: Vec<u8>,
    pub password_digest: Vec<u8>,
}

/// The server's verdict and proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    pub auth_ok: bool,
    /// Why the server refused, in its words ("shared_key mismatch").
    pub reason: String,
    pub hostname: Vec<u8>,
    pub shared_key_digest: Vec<u8>,
}

/// Why the client gives up on a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the server asks for a username and password (its HELO carries an auth salt): set username and password")]
    UserAuthRequired,
    #[error("authentication failed: {0}")]
    Refused(String),
    #[error("same hostname between input and output: invalid configuration (set a different self_hostname)")]
    SameHostname,
    #[error("shared key mismatch: the server's digest does not match ours, check shared_key on both sides")]
    SharedKeyMismatch,
}

/// Why the server refuses a client; the text is what the PONG carries,
/// worded as Fluentd words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingRefused {
    #[error("shared_key mismatch")]
    SharedKeyMismatch,
    #[error("username/password mismatch")]
    UserMismatch,
}

/// The elements of `["KIND", ...]`, `n` of them.
fn elements<'v, 'a>(
    v: &'v Value<'a>,
    kind: &'static str,
    n: usize,
) -> Result<&'v [Value<'a>], Malformed> {
    match v {
        Value::Array(items) if items.len() == n && items[0].bytes() == Some(kind.as_bytes()) => {
            Ok(items)
        }
        _ => Err(Malformed {
            kind,
            why: "not the expected array",
        }),
    }
}

fn strings<'v>(items: &'v [Value], kind: &'static str) -> Result<Vec<&'v [u8]>, Malformed> {
    items
        .iter()
        .map(|v| {
            v.bytes().ok_or(Malformed {
                kind,
                why: "an element is not a string",
            })
        })
        .collect()
}

impl Helo {
    /// From `["HELO", options]`.
    pub fn from_value(v: &Value) -> Result<Helo, Malformed> {
        let bad = |why| Malformed { kind: "HELO", why };
        let options = &elements(v, "HELO", 2)?[1];
        if !matches!(options, Value::Map(_) | Value::Nil) {
            return Err(bad("the options are not a map"));
        }
        let bytes = |key: &[u8]| match options.get(key) {
            None | Some(Value::Nil) => Ok(Vec::new()),
            Some(v) => v
                .bytes()
                .map(<[u8]>::to_vec)
                .ok_or(bad("nonce or auth is not a string")),
        };
        Ok(Helo {
            nonce: bytes(b"nonce")?,
            auth: bytes(b"auth")?,
            keepalive: !matches!(options.get(b"keepalive"), Some(Value::Bool(false))),
        })
    }
}

impl Ping {
    /// From `["PING", hostname, salt, digest, username, password_digest]`.
    pub fn from_value(v: &Value) -> Result<Ping, Malformed> {
        let s = strings(elements(v, "PING", 6)?, "PING")?;
        let [_, hostname, salt, digest, username, password] = s[..] else {
            return Err(Malformed {
                kind: "PING",
                why: "not six elements",
            });
        };
        Ok(Ping {
            hostname: hostname.to_vec(),
            shared_key_salt: salt.to_vec(),
            shared_key_digest: digest.to_vec(),
            username: username.to_vec(),
            password_digest: password.to_vec(),
        })
    }
}

impl Pong {
    /// From `["PONG", auth_ok, reason, hostname, digest]`.
    pub fn from_value(v: &Value) -> Result<Pong, Malformed> {
        let bad = |why| Malformed { kind: "PONG", why };
        let [_, verdict, rest @ ..] = elements(v, "PONG", 5)? else {
            return Err(bad("not five elements"));
        };
        let Value::Bool(auth_ok) = *verdict else {
            return Err(bad("the verdict is not a bool"));
        };
        let [reason, hostname, digest] = strings(rest, "PONG")?[..] else {
            return Err(bad("not five elements"));
        };
        Ok(Pong {
            auth_ok,
            reason: String::from_utf8_lossy(reason).into_owned(),
            hostname: hostname.to_vec(),
            shared_key_digest: digest.to_vec(),
        })
    }
}

/// Lowercase hex of the SHA-512 of the parts, one after another.
fn sha512_hex(parts: &[&[u8]]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .collect()
}

/// Equal contents, in time that depends on the length only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// Client side (the forward output).

/// A PING to send, and what checking the answer needs.
#[derive(Debug)]
pub struct PingSent {
    pub bytes: Vec<u8>,
    self_hostname: Vec<u8>,
    shared_key_salt: Vec<u8>,
    nonce: Vec<u8>,
}

/// The PING answering `helo`, with a fresh random salt (32 hex digits, as
/// Fluentd's). `user` (username, password) is needed when the HELO asks for
/// it, and ignored otherwise.
pub fn ping(
    helo: &Helo,
    self_hostname: &str,
    shared_key: &str,
    user: Option<(&str, &str)>,
) -> Result<PingSent, HandshakeError> {
    // The salt makes the server's proof fresh; it need not be secret.
    let salt: String = (0..32)
        .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
        .collect();
    ping_with_salt(helo, self_hostname, shared_key, user, salt.as_bytes())
}

/// [`ping`] with a given salt.
pub fn ping_with_salt(
    helo: &Helo,
    self_hostname: &str,
    shared_key: &str,
    user: Option<(&str, &str)>,
    shared_key_salt: &[u8],
) -> Result<PingSent, HandshakeError> {
    let host = self_hostname.as_bytes();
    let digest = sha512_hex(&[shared_key_salt, host, &helo.nonce, shared_key.as_bytes()]);
    let (username, password_digest) = if helo.auth.is_empty() {
        (&b""[..], Vec::new())
    } else {
        // Fluentd 1.15's in_forward sends an auth salt whenever it has a
        // <security> section, user auth or not, and its out_forward then
        // answers with an empty user: do the same when none is configured
        // (a server that does check users refuses it with a clear reason).
        let (name, password) = user.unwrap_or(("", ""));
        let name = name.as_bytes();
        (name, sha512_hex(&[&helo.auth, name, password.as_bytes()]))
    };
    let mut out = Vec::new();
    msgpack::write_array_len(&mut out, 6);
    msgpack::write_str(&mut out, b"PING");
    msgpack::write_str(&mut out, host);
    msgpack::write_str(&mut out, shared_key_salt);
    msgpack::write_str(&mut out, &digest);
    msgpack::write_str(&mut out, username);
    msgpack::write_str(&mut out, &password_digest);
    Ok(PingSent {
        bytes: out,
        self_hostname: host.to_vec(),
        shared_key_salt: shared_key_salt.to_vec(),
        nonce: helo.nonce.clone(),
    })
}

impl PingSent {
    /// Whether the server accepted us and proved it knows the shared key.
    pub fn check_pong(&self, pong: &Pong, shared_key: &str) -> Result<(), HandshakeError> {
        if !pong.auth_ok {
            return Err(HandshakeError::Refused(pong.reason.clone()));
        }
        if pong.hostname == self.self_hostname {
            return Err(HandshakeError::SameHostname);
        }
        let expected = sha512_hex(&[
            &self.shared_key_salt,
            &pong.hostname,
            &self.nonce,
            shared_key.as_bytes(),
        ]);
        if !constant_time_eq(&expected, &pong.shared_key_digest) {
            return Err(HandshakeError::SharedKeyMismatch);
        }
        Ok(())
    }
}

// Server side (the forward input).

/// The HELO a server sends first. `nonce` should be fresh and random for
/// each connection (Fluentd sends 16 random bytes); `auth_salt` likewise
/// when the server requires a username and password, empty otherwise.
pub fn helo(nonce: &[u8], auth_salt: &[u8], keepalive: bool) -> Vec<u8> {
    let mut out = Vec::new();
    msgpack::write_array_len(&mut out, 2);
    msgpack::write_str(&mut out, b"HELO");
    msgpack::write_map_len(&mut out, 3);
    msgpack::write_str(&mut out, b"nonce");
    msgpack::write_bin(&mut out, nonce);
    msgpack::write_str(&mut out, b"auth");
    msgpack::write_bin(&mut out, auth_salt);
    msgpack::write_str(&mut out, b"keepalive");
    msgpack::write_bool(&mut out, keepalive);
    out
}

/// Whether the client knows the shared key and, when `users` (username,
/// password) is not empty, one user's password. `nonce` and `auth_salt` are
/// the ones the HELO sent.
pub fn check_ping(
    ping: &Ping,
    nonce: &[u8],
    auth_salt: &[u8],
    shared_key: &str,
    users: &[(&str, &str)],
) -> Result<(), PingRefused> {
    let expected = sha512_hex(&[
        &ping.shared_key_salt,
        &ping.hostname,
        nonce,
        shared_key.as_bytes(),
    ]);
    if !constant_time_eq(&expected, &ping.shared_key_digest) {
        return Err(PingRefused::SharedKeyMismatch);
    }
    if users.is_empty() {
        return Ok(());
    }
    // Every user is checked, so the time does not tell which name exists.
    let mut ok = false;
    for (username, password) in users {
        let digest = sha512_hex(&[auth_salt, username.as_bytes(), password.as_bytes()]);
        let name = constant_time_eq(username.as_bytes(), &ping.username);
        ok |= name & constant_time_eq(&digest, &ping.password_digest);
    }
    if ok {
        Ok(())
    } else {
        Err(PingRefused::UserMismatch)
    }
}

/// The PONG answering `ping` as [`check_ping`] decided.
pub fn pong(
    ping: &Ping,
    verdict: &Result<(), PingRefused>,
    nonce: &[u8],
    self_hostname: &str,
    shared_key: &str,
) -> Vec<u8> {
    match verdict {
        Ok(()) => pong_accepted(ping, nonce, self_hostname, shared_key),
        Err(why) => pong_refused(&why.to_string()),
    }
}

/// The PONG accepting `ping`, with the server's proof that it knows the key.
pub fn pong_accepted(ping: &Ping, nonce: &[u8], self_hostname: &str, shared_key: &str) -> Vec<u8> {
    let host = self_hostname.as_bytes();
    let digest = sha512_hex(&[&ping.shared_key_salt, host, nonce, shared_key.as_bytes()]);
    let mut out = Vec::new();
    msgpack::write_array_len(&mut out, 5);
    msgpack::write_str(&mut out, b"PONG");
    msgpack::write_bool(&mut out, true);
    msgpack::write_str(&mut out, b"");
    msgpack::write_str(&mut out, host);
    msgpack::write_str(&mut out, &digest);
    out
}

/// The PONG refusing a client; the server closes the connection after it.
pub fn pong_refused(reason: &str) -> Vec<u8> {
    let mut out = Vec::new();
    msgpack::write_array_len(&mut out, 5);
    msgpack::write_str(&mut out, b"PONG");
    msgpack::write_bool(&mut out, false);
    msgpack::write_str(&mut out, reason.as_bytes());
    msgpack::write_str(&mut out, b"");
    msgpack::write_str(&mut out, b"");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::message::{decode_message, Decoded, MessageError, Options};
    use crate::forward::msgpack::{value_len, Limits};

    fn read(frame: &[u8]) -> Decoded {
        decode_message(frame, &Limits::default(), 1 << 20).unwrap()
    }

    fn read_helo(frame: &[u8]) -> Helo {
        match read(frame) {
            Decoded::Helo(h) => h,
            other => panic!("not a HELO: {other:?}"),
        }
    }

    fn read_ping(frame: &[u8]) -> Ping {
        match read(frame) {
            Decoded::Ping(p) => p,
            other => panic!("not a PING: {other:?}"),
        }
    }

    fn read_pong(frame: &[u8]) -> Pong {
        match read(frame) {
            Decoded::Pong(p) => p,
            other => panic!("not a PONG: {other:?}"),
        }
    }

    /// The values of a captured stream, in order.
    fn split(mut stream: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while !stream.is_empty() {
            let n = value_len(stream, &Limits::default()).unwrap().unwrap();
            out.push(&stream[..n]);
            stream = &stream[n..];
        }
        out
    }

    const ALICE: &[(&str, &str)] = &[("bob", "other"), ("alice", "pw")];

    /// Server and client here, both ways, with the outcome each side sees.
    fn handshake(
        client_key: &str,
        server_key: &str,
        user: Option<(&str, &str)>,
        users: &[(&str, &str)],
    ) -> (Result<(), PingRefused>, Result<(), HandshakeError>) {
        let nonce = b"0123456789abcdef";
        let auth = if users.is_empty() {
            &b""[..]
        } else {
            b"fedcba9876543210"
        };
        let helo_frame = helo(nonce, auth, true);
        let h = read_helo(&helo_frame);
        assert_eq!(
            (h.nonce.as_slice(), h.auth.as_slice(), h.keepalive),
            (&nonce[..], auth, true)
        );
        let sent = ping(&h, "client", client_key, user).unwrap();
        let p = read_ping(&sent.bytes);
        let verdict = check_ping(&p, nonce, auth, server_key, users);
        let pong_frame = pong(&p, &verdict, nonce, "server", server_key);
        (
            verdict,
            sent.check_pong(&read_pong(&pong_frame), client_key),
        )
    }

    #[test]
    fn round_trip() {
        assert_eq!(handshake("k", "k", None, &[]), (Ok(()), Ok(())));
        assert_eq!(handshake("", "", None, &[]), (Ok(()), Ok(())));
        assert_eq!(
            handshake("k", "k", Some(("alice", "pw")), ALICE),
            (Ok(()), Ok(()))
        );
    }

    #[test]
    fn wrong_key_is_refused_with_fluentds_reason() {
        assert_eq!(
            handshake("wrong", "k", None, &[]),
            (
                Err(PingRefused::SharedKeyMismatch),
                Err(HandshakeError::Refused("shared_key mismatch".into()))
            )
        );
        assert_eq!(
            HandshakeError::Refused("shared_key mismatch".into()).to_string(),
            "authentication failed: shared_key mismatch"
        );
    }

    #[test]
    fn wrong_or_missing_user() {
        let refused = Err(HandshakeError::Refused("username/password mismatch".into()));
        assert_eq!(
            handshake("k", "k", Some(("alice", "nope")), ALICE),
            (Err(PingRefused::UserMismatch), refused.clone())
        );
        // Bob's password does not open Alice's account.
        assert_eq!(
            handshake("k", "k", Some(("alice", "other")), ALICE),
            (Err(PingRefused::UserMismatch), refused)
        );
        let h = Helo {
            nonce: b"n".to_vec(),
            auth: b"salt".to_vec(),
            keepalive: true,
        };
        // No user configured: an empty one, as Fluentd's out_forward sends
        // (its in_forward salts every HELO), refused by a server that
        // checks users.
        let sent = ping(&h, "c", "k", None).unwrap();
        let (ping_value, _) =
            crate::forward::msgpack::decode(&sent.bytes, &Default::default()).unwrap();
        let parsed = Ping::from_value(&ping_value).unwrap();
        assert_eq!(parsed.username, b"");
        assert_eq!(
            check_ping(&parsed, b"n", b"salt", "k", ALICE),
            Err(PingRefused::UserMismatch)
        );
    }

    #[test]
    fn a_server_that_does_not_know_the_key_or_shares_our_name() {
        let h = Helo {
            nonce: b"nonce".to_vec(),
            auth: Vec::new(),
            keepalive: false,
        };
        let sent = ping(&h, "client", "k", None).unwrap();
        let p = read_ping(&sent.bytes);
        // The server accepts everyone but proves it with another key.
        let pong = read_pong(&pong_accepted(&p, b"nonce", "server", "other"));
        assert_eq!(
            sent.check_pong(&pong, "k"),
            Err(HandshakeError::SharedKeyMismatch)
        );
        let pong = read_pong(&pong_accepted(&p, b"nonce", "client", "k"));
        assert_eq!(
            sent.check_pong(&pong, "k"),
            Err(HandshakeError::SameHostname)
        );
        // Salts are fresh.
        assert_ne!(
            p.shared_key_salt,
            read_ping(&ping(&h, "client", "k", None).unwrap().bytes).shared_key_salt
        );
        assert_eq!(p.shared_key_salt.len(), 32);
    }

    #[test]
    fn malformed_handshake_messages() {
        // A PING with a number in it, a PONG without a bool.
        let bad: &[&[u8]] = &[
            b"\x96\xa4PING\xa1h\xa1s\xa1d\xa0\x01",
            b"\x95\xa4PONG\xa0\xa0\xa0\xa0",
        ];
        for frame in bad {
            assert!(matches!(
                decode_message(frame, &Limits::default(), 1 << 20),
                Err(MessageError::Handshake(_))
            ));
        }
    }

    #[test]
    fn fixture_fluentd_server_helo_pong_and_ack() {
        // Fluentd 1.15.3 in_forward with <security> self_hostname
        // fluentd-server, shared_key secret, user alice/pw; the client was
        // capture/client.py with hostname client-host and salt "S" * 16.
        let stream = include_bytes!("fixtures/fluentd-in-handshake-ack.bin");
        let [helo_frame, pong_frame, ack_frame] = split(stream)[..] else {
            panic!()
        };
        let h = read_helo(helo_frame);
        assert_eq!((h.nonce.len(), h.auth.len(), h.keepalive), (16, 16, true));
        // Our HELO, given Fluentd's nonce and salt, is Fluentd's byte for byte.
        assert_eq!(helo(&h.nonce, &h.auth, true), helo_frame);

        let salt = [b'S'; 16];
        let sent =
            ping_with_salt(&h, "client-host", "secret", Some(("alice", "pw")), &salt).unwrap();
        // Fluentd accepted this PING and proved the key.
        assert_eq!(sent.check_pong(&read_pong(pong_frame), "secret"), Ok(()));
        assert_eq!(
            sent.check_pong(&read_pong(pong_frame), "wrong"),
            Err(HandshakeError::SharedKeyMismatch)
        );
        // And our server would have answered it with the same PONG.
        let p = read_ping(&sent.bytes);
        assert_eq!(check_ping(&p, &h.nonce, &h.auth, "secret", ALICE), Ok(()));
        assert_eq!(
            pong_accepted(&p, &h.nonce, "fluentd-server", "secret"),
            pong_frame
        );
        // The ack of a chunk id ending in '\n', echoed byte for byte.
        assert_eq!(
            read(ack_frame),
            Decoded::Ack(b"Y2h1bmstaWQtMTIzNDU2Nw==\n".to_vec())
        );
        let mut ack = Vec::new();
        crate::forward::message::write_ack(&mut ack, b"Y2h1bmstaWQtMTIzNDU2Nw==\n");
        assert_eq!(ack, ack_frame);
    }

    #[test]
    fn fixture_fluentd_server_refusals() {
        for (file, reason) in [
            (
                &include_bytes!("fixtures/fluentd-in-wrong-key.bin")[..],
                "shared_key mismatch",
            ),
            (
                &include_bytes!("fixtures/fluentd-in-wrong-password.bin")[..],
                "username/password mismatch",
            ),
        ] {
            let [helo_frame, pong_frame] = split(file)[..] else {
                panic!()
            };
            let h = read_helo(helo_frame);
            let sent = ping(&h, "client-host", "secret", Some(("alice", "pw"))).unwrap();
            let pong = read_pong(pong_frame);
            assert_eq!(
                sent.check_pong(&pong, "secret"),
                Err(HandshakeError::Refused(reason.into()))
            );
            assert_eq!(pong_refused(reason), pong_frame);
        }
    }

    #[test]
    fn fixture_fluent_bit_server_helo_pong_and_ack() {
        // fluent-bit 5.1.1 in_forward with shared_key secret, self_hostname
        // fb-server and security.users "alice pw"; its HELO has no keepalive.
        let stream = include_bytes!("fixtures/fluent-bit-in-handshake-ack.bin");
        let [helo_frame, pong_frame, ack_frame] = split(stream)[..] else {
            panic!()
        };
        let h = read_helo(helo_frame);
        assert_eq!((h.nonce.len(), h.auth.len(), h.keepalive), (16, 16, true));
        let sent = ping_with_salt(
            &h,
            "client-host",
            "secret",
            Some(("alice", "pw")),
            &[b'S'; 16],
        )
        .unwrap();
        let pong = read_pong(pong_frame);
        assert_eq!(pong.hostname, b"fb-server");
        assert_eq!(sent.check_pong(&pong, "secret"), Ok(()));
        assert_eq!(
            read(ack_frame),
            Decoded::Ack(b"Y2h1bmstaWQtMTIzNDU2Nw==\n".to_vec())
        );
    }

    #[test]
    fn fixture_fluent_bit_client_ping_and_forward() {
        // fluent-bit 5.1.1 out_forward, shared_key secret, self_hostname
        // fluentbit-host, require_ack_response on, answering capture.py's
        // HELO (nonce "N" * 16, no auth salt). Its salt is 16 raw bytes in a
        // str, and it sends sha512("") as the password digest.
        let stream = include_bytes!("fixtures/fluent-bit-shared-key.bin");
        let [ping_frame, events] = split(stream)[..] else {
            panic!()
        };
        let p = read_ping(ping_frame);
        assert_eq!(p.hostname, b"fluentbit-host");
        assert!(std::str::from_utf8(&p.shared_key_salt).is_err());
        let nonce = [b'N'; 16];
        assert_eq!(check_ping(&p, &nonce, b"", "secret", &[]), Ok(()));
        assert_eq!(
            check_ping(&p, &nonce, b"", "wrong", &[]),
            Err(PingRefused::SharedKeyMismatch)
        );
        assert_eq!(
            check_ping(&p, b"another nonce...", b"", "secret", &[]),
            Err(PingRefused::SharedKeyMismatch)
        );

        let Decoded::Events {
            tag,
            entries,
            options,
            skipped: 0,
            ..
        } = read(events)
        else {
            panic!()
        };
        assert_eq!(tag, b"app.key");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].time, 1_796_231_381_824_192_530);
        assert_eq!(
            serde_json::Value::Object(entries[0].record.clone().into_map()),
            serde_json::json!({"message": "hi"})
        );
        assert_eq!(
            options,
            Options {
                size: Some(1),
                chunk: Some(b"JRtODdyfsSd725mkwey1lQ==".to_vec()),
                fluent_signal: Some(0),
                ..Options::default()
            }
        );
    }

    #[test]
    fn fixture_fluentd_client_ping_and_packed_forward() {
        // Fluentd 1.15.3 out_forward, <security> self_hostname fluentd-host,
        // shared_key secret, answering capture.py's HELO (nonce "N" * 16).
        let stream = include_bytes!("fixtures/fluentd-shared-key.bin");
        let [ping_frame, events] = split(stream)[..] else {
            panic!()
        };
        let p = read_ping(ping_frame);
        let nonce = [b'N'; 16];
        assert_eq!(check_ping(&p, &nonce, b"", "secret", &[]), Ok(()));
        // Our client, given Fluentd's salt, sends Fluentd's PING byte for byte.
        let h = Helo {
            nonce: nonce.to_vec(),
            auth: Vec::new(),
            keepalive: true,
        };
        let ours = ping_with_salt(&h, "fluentd-host", "secret", None, &p.shared_key_salt).unwrap();
        assert_eq!(ours.bytes, ping_frame);

        let Decoded::Events {
            tag,
            entries,
            options,
            skipped: 0,
            ..
        } = read(events)
        else {
            panic!()
        };
        assert_eq!(tag, b"app.fluentd");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].time, 1_796_232_198_087_591_398);
        assert_eq!(
            serde_json::Value::Object(entries[0].record.clone().into_map()),
            serde_json::json!({"message": "hi"})
        );
        assert_eq!(
            options.chunk.as_deref(),
            Some(&b"ZhqeYZ5Liqx1YI2ADHEKEw==\n"[..])
        );
    }
}
