//! The Fluentd forward protocol, v1 and v1.5, once, for the `forward` output
//! (client) and the `forward` input (server). Pure code: byte slices in,
//! values and bytes out; the connections, TLS and timers are the plugins'.
//!
//! Specification: <https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1.5>
//! (v1: <https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1>). Where
//! the text and the peers differ, the peers win: Fluentd 1.15's
//! `in_forward.rb`/`out_forward.rb` and fluent-bit 5.1's forward plugins.
//!
//! A connection carries a stream of msgpack values, each one frame, with no
//! other framing: [`msgpack::value_len`] (or `frame_len`, with a size cap)
//! finds where one ends. A frame is one of:
//!
//! - events, in four modes, each ending in an optional option map:
//!   - Message `[tag, time, record, option?]`;
//!   - Forward `[tag, [[time, record], ...], option?]`;
//!   - PackedForward `[tag, bin|str(entries...), option?]`, the entries
//!     concatenated msgpack (Fluentd sends them as a str32);
//!   - CompressedPackedForward: the same with `"compressed": "gzip"` (one or
//!     more gzip members, as fluent-bit concatenates them) or `"zstd"`;
//! - a keepalive: a bare `nil`;
//! - an ack, from server to client: `{"ack": chunk}`, echoing the option's
//!   chunk id byte for byte (Fluentd's end in `\n`);
//! - the handshake when a shared key is set: HELO, PING, PONG
//!   ([`handshake`]).
//!
//! Fluentd's in_forward also takes frames as JSON when a connection's first
//! byte is `[` or `{`; no sender uses that, and it is not read here.
//!
//! An entry is `[time, record]`, or v1.5's `[[time, metadata], record]`,
//! which fluent-bit sends by default since 5.0.5. A time is an EventTime
//! (ext type 0: 4-byte big-endian seconds, 4-byte nanoseconds; fixext 8 or
//! ext 8), or integer seconds (`time_as_integer`), or float seconds; here
//! always nanoseconds since the epoch. The option map carries `size` (event
//! count), `chunk` (the id to ack, when the sender wants acks),
//! `compressed` (`gzip`, `zstd`; Fluentd writes `text` for none) and
//! fluent-bit's `fluent_signal`.
//!
//! - [`msgpack`]: values, limits (depth, element count, frame size),
//!   conversion to and from the agent's JSON records.
//! - [`message`]: frames read into owned events ([`message::decode_message`])
//!   and the frames a sender writes (entries, PackedForward, acks, chunk ids).
//! - [`handshake`]: HELO, PING and PONG, both sides.
//!
//! `fixtures/` holds bytes captured from the real peers, with how each was
//! made (`fixtures/README.md`); the tests read them with `include_bytes!`.

pub mod handshake;
pub mod message;
pub mod msgpack;
