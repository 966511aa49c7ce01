//! A tunnel's counters, declared once: the shared atomics ([`Stats`]), their plain copy
//! ([`Counters`]), and each drop cause's name and label for `show`, the UAPI's
//! `get=vpwn-counters` and the CLI all come from the one list below.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Refusal;

macro_rules! counters {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $label:literal,
    )*) => {
        /// Counters of a running tunnel, shared by its threads.
        #[derive(Debug, Default)]
        pub struct Stats {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        /// A plain copy of [`Stats`].
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Stats {
            /// The counters now.
            pub fn snapshot(&self) -> Counters {
                Counters { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }

        impl Counters {
            /// Every counter as `(name, label, value)`, in declaration order: the name is
            /// the field's (`drop_auth`), the label how `show` words it.
            pub fn all(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![ $( (stringify!($name), $label, self.$name), )* ]
            }
        }
    };
}

counters! {
    /// Packets sent through the tunnel (from the device).
    tx_packets: "packets sent",
    /// Bytes of those packets.
    tx_bytes: "bytes sent",
    /// Packets received through the tunnel (to the device).
    rx_packets: "packets received",
    /// Bytes of those packets.
    rx_bytes: "bytes received",
    /// Datagrams that failed authentication: a wrong key or preshared key, a bad MAC or
    /// AEAD tag, or a valid message for no peer of ours.
    drop_auth: "auth",
    /// Replayed or too old datagrams.
    drop_replay: "replay",
    /// Datagrams that are not (valid) WireGuard messages.
    drop_malformed: "malformed",
    /// Datagrams too long to be a WireGuard message.
    drop_oversized: "oversized",
    /// Decrypted packets whose inner source is outside the peer's allowed IPs.
    drop_not_allowed: "outside allowed IPs",
    /// Packets with nowhere to go yet: no endpoint known for the peer, or no session.
    drop_no_session: "without session",
    /// Packets from the device to an address no peer's allowed IPs hold.
    drop_no_route: "no route",
    /// Handshake messages shed because the handshake queue was full (a flood faster than
    /// the handshake thread; data is never queued there).
    drop_handshake_queue: "handshakes shed (queue full)",
    /// Handshake messages dropped under load because their source, which proved its
    /// address with a cookie, went over its share (20 a second, 5 at once).
    drop_handshake_rate: "handshakes over their source's rate",
}

impl Stats {
    /// Adds `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts one drop of this cause.
    pub(crate) fn dropped(&self, why: Refusal) {
        let c = match why {
            Refusal::Auth => &self.drop_auth,
            Refusal::Replay => &self.drop_replay,
            Refusal::Malformed => &self.drop_malformed,
            Refusal::NoSession | Refusal::Expired | Refusal::UnderLoad => &self.drop_no_session,
        };
        Stats::add(c, 1);
    }
}

impl Counters {
    /// The drop counters alone, as `(cause, label, value)`, the cause without `drop_`.
    pub fn drops(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.all()
            .into_iter()
            .filter_map(|(name, label, v)| Some((name.strip_prefix("drop_")?, label, v)))
            .collect()
    }

    /// The drops in words, the non-zero ones: `3 auth, 2 no route`, or `nothing`.
    pub fn drops_text(&self) -> String {
        let list: Vec<String> = self
            .drops()
            .into_iter()
            .filter(|(_, _, v)| *v > 0)
            .map(|(_, label, v)| format!("{v} {label}"))
            .collect();
        if list.is_empty() {
            "nothing".into()
        } else {
            list.join(", ")
        }
    }
}
