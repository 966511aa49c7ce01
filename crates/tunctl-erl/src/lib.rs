//! The NIF behind the Erlang application `tunctl` (`bindings/erlang/`): the Erlang original's
//! modules `tuncer` and `tunctl`, re-made over the [`tunctl`] library.
//!
//! The Erlang module that loads it is `tunctl_nif` (private to the application); users call
//! `tuncer`, `tunctl` and `tunctl_offload`, whose documentation is in their source. This crate
//! holds what must be native:
//!
//! - [`core`]: one open device (or one extra queue of a multi-queue device) behind an Erlang
//!   resource, and the registries that let `tuncer:send/2` and `tuncer:read/1` reach it by the
//!   device's pid or by its fd number without a round trip through the device's process.
//! - [`reader`]: the reader thread of a device, which delivers `{tuntap, Dev, Packet}` straight
//!   to the owner in active mode (`true`, `once`, `N`, with exact flow control) and tells the
//!   device's process when a passive receive can go on. No scheduler ever waits for a packet.
//! - [`nif`]: the functions Erlang calls. Anything that talks to the kernel over netlink or
//!   enters a namespace runs on a dirty I/O scheduler; reads and writes never wait
//!   (`RWF_NOWAIT`), so they run on normal schedulers.
//! - [`reason`]: the library's errors as the POSIX atoms Erlang programs match on.
//!
//! Built by `bindings/erlang/rebar.config`'s hook (`cargo build --release -p tunctl-erl`), which
//! copies `libtunctl_erl.so` to the application's `priv/` directory. NIF version 2.15, so
//! Erlang/OTP 22 and later (Debian 12's OTP 25 among them) load it.
#![deny(missing_docs)]

pub mod core;
pub mod nif;
pub mod reader;
pub mod reason;

/// The atoms this NIF uses.
pub mod atoms {
    rustler::atoms! {
        /// `ok`
        ok,
        /// `error`
        error,
        /// `true`
        true_ = "true",
        /// `false`
        false_ = "false",
        /// `undefined`
        undefined,
        /// `once`
        once,
        /// `eagain`
        eagain,
        /// `ebadf`
        ebadf,
        /// `einval`
        einval,
        /// `tuntap`: a packet in active mode.
        tuntap,
        /// `tuntap_error`: the error that ended active delivery.
        tuntap_error,
        /// `tuntap_passive`: an `{active, N}` count ran out.
        tuntap_passive,
        /// `'$tuncer'`: messages from the reader thread to the device's process.
        tuncer_internal = "$tuncer",
        /// `readable`: a passive receive may go on.
        readable,
        /// `gone`: the device went away under an active reader.
        gone,
        /// Device flags, as `tuncer:flags/1` lists them.
        tun,
        /// `tap`
        tap,
        /// `no_pi`
        no_pi,
        /// `one_queue`
        one_queue,
        /// `vnet_hdr`
        vnet_hdr,
        /// `tun_excl`
        tun_excl,
        /// `multi_queue`
        multi_queue,
        /// `persist`
        persist,
        /// `namespace`
        namespace,
        /// `offload`
        offload,
        /// `owner`
        owner,
        /// `group`
        group,
        /// Offload flags.
        csum,
        /// `tso4`
        tso4,
        /// `tso6`
        tso6,
        /// `tso_ecn`
        tso_ecn,
        /// `uso4`
        uso4,
        /// `uso6`
        uso6,
        /// Address families.
        inet,
        /// `inet6`
        inet6,
        /// `virtio_net_hdr` fields.
        flags,
        /// `gso_type`
        gso_type,
        /// `hdr_len`
        hdr_len,
        /// `gso_size`
        gso_size,
        /// `csum_start`
        csum_start,
        /// `csum_offset`
        csum_offset,
        /// GSO types.
        none,
        /// `tcpv4`
        tcpv4,
        /// `tcpv6`
        tcpv6,
        /// `udp_l4`
        udp_l4,
        /// `udp`
        udp,
        /// `ecn`
        ecn,
    }
}

rustler::init!("tunctl_nif");
