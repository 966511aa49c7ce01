%% @doc Offload from Erlang (ours): the virtio-net header of a `vnet_hdr' device, GSO split
%% and GRO coalesce, by the tunctl Rust library's `offload' module.
%%
%% A device created with `{offload, [csum, tso4, tso6]}' (or `uso4', `uso6' for UDP) hands
%% over whole TCP super-packets of up to 64 KiB, each behind a 10-byte virtio-net header,
%% and takes them back: a forwarder that moves packets from one such device to another
%% passes them as they are (one read and one write per 64 KiB instead of per 1500 bytes). A
%% program that looks into the packets splits them first ({@link split/1}); one that makes
%% packets can coalesce them ({@link coalesce/2}) before writing them to such a device.
-module(tunctl_offload).

-export([header/1, split/1, coalesce/1, coalesce/2]).

-type gso_type() :: none | tcpv4 | udp | tcpv6 | udp_l4 | integer().
-type header() :: #{
    needs_csum := boolean(),
    data_valid := boolean(),
    gso_type := gso_type(),
    ecn := boolean(),
    hdr_len := non_neg_integer(),
    gso_size := non_neg_integer(),
    csum_start := non_neg_integer(),
    csum_offset := non_neg_integer(),
    payload := binary()
}.

-export_type([header/0]).

%% @doc Decodes the virtio-net header in front of a packet read from a `vnet_hdr' device
%% (fields little-endian, as tun writes them).
-spec header(binary()) -> header().
header(<<Flags, Gso, HdrLen:16/little, GsoSize:16/little, CsumStart:16/little,
    CsumOffset:16/little, Payload/binary>>) ->
    #{
        needs_csum => Flags band 1 =/= 0,
        data_valid => Flags band 2 =/= 0,
        gso_type => gso_type(Gso band 16#7f),
        ecn => Gso band 16#80 =/= 0,
        hdr_len => HdrLen,
        gso_size => GsoSize,
        csum_start => CsumStart,
        csum_offset => CsumOffset,
        payload => Payload
    };
header(_) ->
    erlang:error(badarg).

gso_type(0) -> none;
gso_type(1) -> tcpv4;
gso_type(3) -> udp;
gso_type(4) -> tcpv6;
gso_type(5) -> udp_l4;
gso_type(N) -> N.

%% @doc Splits what one read of a `vnet_hdr' device gave into plain IP packets no longer
%% than the sender's segments, with complete checksums (GSO done in userspace). A packet
%% that is not a super-packet comes back as one packet, its checksum completed if the header
%% asked for it. `{error, einval}' for a malformed or unsupported one (UFO, IPv4 fragments).
-spec split(binary()) -> {ok, [binary()]} | {error, einval}.
split(Packet) when is_binary(Packet) ->
    tunctl_nif:gso_split(Packet);
split(_) ->
    {error, einval}.

%% @equiv coalesce(Packets, [])
-spec coalesce([binary()]) -> {ok, [binary()]} | {error, term()}.
coalesce(Packets) ->
    coalesce(Packets, []).

%% @doc Coalesces IP packets (at most 64 at a time) into as few packets as possible, each
%% behind its virtio-net header, ready to write to a `vnet_hdr' device: consecutive TCP
%% segments of one flow become one super-packet (GRO done in userspace); with the option
%% `udp', UDP datagrams of one flow too (the device must have accepted `uso4'/`uso6').
%% Anything else passes as it is, behind an empty header.
-spec coalesce([binary()], [udp]) -> {ok, [binary()]} | {error, term()}.
coalesce(Packets, Opts) when is_list(Packets), length(Packets) =< 64, is_list(Opts) ->
    case lists:all(fun(P) -> is_binary(P) andalso byte_size(P) =< 65535 end, Packets) of
        true -> tunctl_nif:gro_coalesce(Packets, lists:member(udp, Opts));
        false -> {error, einval}
    end;
coalesce(_, _) ->
    {error, einval}.
