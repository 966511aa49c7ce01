%% Our own suite for tuncer, tunctl and tunctl_offload: every function and option, each
%% message, flow control under a flood, hand-over, the owner's exit, fd leaks, bad arguments.
%% Runs as root inside a network namespace of its own (crates/tunctl-erl/tests/erlang.rs makes
%% it); everything is checked through the kernel's own view too (/sys/class/net, `ip').
-module(tunctl_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0, init_per_suite/1, end_per_suite/1]).
-export([
    create_defaults/1,
    create_options/1,
    create_errors/1,
    ioctls/1,
    up_addresses/1,
    dstaddr_broadcast/1,
    down_mtu/1,
    passive_io/1,
    read_write_fd/1,
    recv_timeout/1,
    active_true/1,
    active_once_flood/1,
    active_n_flood/1,
    active_toggle_no_loss/1,
    controlling_process/1,
    owner_exit/1,
    deleted_outside/1,
    namespace_inside/1,
    multi_queue/1,
    offload/1,
    tunctl_low_level/1,
    bad_arguments/1,
    no_fd_leak/1
]).

suite() ->
    [{timetrap, {seconds, 120}}].

all() ->
    [
        create_defaults,
        create_options,
        create_errors,
        ioctls,
        up_addresses,
        dstaddr_broadcast,
        down_mtu,
        passive_io,
        read_write_fd,
        recv_timeout,
        active_true,
        active_once_flood,
        active_n_flood,
        active_toggle_no_loss,
        controlling_process,
        owner_exit,
        deleted_outside,
        namespace_inside,
        multi_queue,
        offload,
        tunctl_low_level,
        bad_arguments,
        no_fd_leak
    ].

init_per_suite(Config) ->
    % No IPv6 chatter (router solicitations, MLD) on new devices unless a case asks for it:
    % the flood cases count packets exactly.
    "" = os:cmd("sysctl -q -w net.ipv6.conf.default.disable_ipv6=1"),
    "" = os:cmd("ip link set lo up"),
    Config.

end_per_suite(Config) ->
    Config.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

name(Prefix) ->
    lists:concat([Prefix, erlang:unique_integer([positive])]).

sys(Dev, File) ->
    case file:read_file(["/sys/class/net/", Dev, "/", File]) of
        {ok, B} -> string:trim(binary_to_list(B));
        {error, _} = E -> E
    end.

exists(Dev) ->
    filelib:is_dir(lists:flatten(["/sys/class/net/", unicode:characters_to_list(Dev)])).

ip(Args) ->
    os:cmd("ip " ++ Args ++ " 2>&1").

has(Haystack, Needle) ->
    string:find(Haystack, Needle) =/= nomatch.

%% Waits up to 2 s for Fun() to be true.
eventually(Fun) -> eventually(Fun, 200).
eventually(Fun, 0) -> Fun();
eventually(Fun, N) ->
    case Fun() of
        true ->
            true;
        _ ->
            timer:sleep(10),
            eventually(Fun, N - 1)
    end.

%% A tun device with Net.1/24, up: what is sent to Net.2 comes out of it.
tun(Net, Opts) ->
    {ok, Dev} = tuncer:create(<<>>, [tun, no_pi | Opts]),
    ok = tuncer:up(Dev, Net ++ ".1/24"),
    Dev.

%% Sends N UDP datagrams (Payload, port Port) from this node to Net.2, through the tun.
flood(Net, Port, N) ->
    {ok, S} = gen_udp:open(0, [binary, {ip, parse(Net ++ ".1")}]),
    [ok = gen_udp:send(S, parse(Net ++ ".2"), Port, <<I:32>>) || I <- lists:seq(1, N)],
    ok = gen_udp:close(S).

parse(Str) ->
    {ok, A} = inet:parse_address(Str),
    A.

%% The UDP payload of an IPv4 packet to Port, or false.
udp_to(Port, <<4:4, IHL:4, _:8/binary, 17, _:10/binary, Rest/binary>>) ->
    Skip = (IHL - 5) * 4,
    case Rest of
        <<_:Skip/binary, _SPort:16, Port:16, _Len:16, _Sum:16, Payload/binary>> -> Payload;
        _ -> false
    end;
udp_to(_, _) ->
    false.

%% Messages {tuntap, Dev, _} now in the mailbox (taken out), and whether a passive note came.
drain(Dev) -> drain(Dev, [], false).
drain(Dev, Acc, Passive) ->
    receive
        {tuntap, Dev, P} -> drain(Dev, [P | Acc], Passive);
        {tuntap_passive, Dev} -> drain(Dev, Acc, true)
    after 0 -> {lists:reverse(Acc), Passive}
    end.

%% Exactly N packets delivered (waiting up to 5 s for each: the machine may be busy).
await(_, 0) -> [];
await(Dev, N) ->
    receive
        {tuntap, Dev, P} -> [P | await(Dev, N - 1)]
    after 5000 -> ct:fail({packets_missing, N})
    end.

%% Whether {tuntap_passive, Dev} comes (within 5 s).
passive_note(Dev) ->
    receive {tuntap_passive, Dev} -> true after 5000 -> false end.

%% Reads by fd until a packet comes (at most 5 s).
read_fd(FD) -> read_fd(FD, 500).
read_fd(FD, 0) -> tuncer:read(FD);
read_fd(FD, N) ->
    case tuncer:read(FD) of
        {error, eagain} -> timer:sleep(10), read_fd(FD, N - 1);
        Other -> Other
    end.

%% Packets read passively until none is left.
read_all(Dev) -> read_all(Dev, []).
read_all(Dev, Acc) ->
    case tuncer:recv(Dev, 65535, 50) of
        {ok, P} -> read_all(Dev, [P | Acc]);
        {error, timeout} -> lists:reverse(Acc)
    end.

checksum(Bin) -> checksum(Bin, 0).
checksum(<<X:16, Rest/binary>>, Sum) -> checksum(Rest, Sum + X);
checksum(<<X:8>>, Sum) -> checksum(<<>>, Sum + (X bsl 8));
checksum(<<>>, Sum) ->
    Folded = (Sum band 16#ffff) + (Sum bsr 16),
    (bnot ((Folded band 16#ffff) + (Folded bsr 16))) band 16#ffff.

%% An IPv4 UDP datagram, checksums done.
udp_packet({S1, S2, S3, S4} = Src, {D1, D2, D3, D4} = Dst, SPort, DPort, Payload) ->
    ULen = 8 + byte_size(Payload),
    Pseudo = <<S1, S2, S3, S4, D1, D2, D3, D4, 0, 17, ULen:16>>,
    USum0 = checksum(<<Pseudo/binary, SPort:16, DPort:16, ULen:16, 0:16, Payload/binary>>),
    USum = case USum0 of 0 -> 16#ffff; _ -> USum0 end,
    Len = 20 + ULen,
    H0 = <<4:4, 5:4, 0, Len:16, 0:16, 0:16, 64, 17, 0:16, S1, S2, S3, S4, D1, D2, D3, D4>>,
    <<Pre:10/binary, 0:16, Post/binary>> = H0,
    _ = Src, _ = Dst,
    <<Pre/binary, (checksum(H0)):16, Post/binary, SPort:16, DPort:16, ULen:16, USum:16,
        Payload/binary>>.

fds() ->
    length(filelib:wildcard("/proc/" ++ os:getpid() ++ "/fd/*")).

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

create_defaults(_Config) ->
    {ok, Dev} = tuncer:create(),
    true = is_pid(Dev),
    Name = binary_to_list(tuncer:devname(Dev)),
    "tap" ++ _ = Name,
    "0x1002" = sys(Name, "tun_flags"),
    [tap, no_pi] = tuncer:flags(Dev),
    true = is_integer(tuncer:getfd(Dev)),
    ok = tuncer:destroy(Dev),
    false = exists(Name),
    % Named, string or binary.
    {ok, D2} = tuncer:create("erltap0"),
    <<"erltap0">> = tuncer:devname(D2),
    {ok, D3} = tuncer:create(<<"erltun%d">>, [tun, no_pi]),
    <<"erltun0">> = tuncer:devname(D3),
    [ok = tuncer:destroy(D) || D <- [D2, D3]],
    ok.

create_options(_Config) ->
    % Without no_pi: the 4-byte header is there, and header/1 reads the protocol in
    % network order.
    {ok, Pi} = tuncer:create(<<>>, [tun]),
    PiName = binary_to_list(tuncer:devname(Pi)),
    "0x1" = sys(PiName, "tun_flags"),
    ok = tuncer:up(Pi, "10.90.1.1/24"),
    flood("10.90.1", 7001, 1),
    {ok, Framed} = tuncer:recv(Pi, 65535, 2000),
    {tun_pi, 0, 16#0800, Payload} = tuncer:header(Framed),
    <<1:32>> = udp_to(7001, Payload),
    ok = tuncer:destroy(Pi),
    % one_queue (ignored by the kernel), vnet_hdr, multi_queue.
    {ok, V} = tuncer:create(<<>>, [tap, no_pi, one_queue, vnet_hdr]),
    true = lists:member(vnet_hdr, tuncer:flags(V)),
    {ok, M} = tuncer:create(<<>>, [tun, no_pi, multi_queue]),
    true = lists:member(multi_queue, tuncer:flags(M)),
    % tun wins over tap, as in the kernel.
    {ok, Both} = tuncer:create(<<>>, [tap, tun, no_pi]),
    [tun | _] = tuncer:flags(Both),
    % tun_excl on an existing name: ebusy; without it, a persistent one is attached.
    ok = tuncer:persist(V, true),
    VName = tuncer:devname(V),
    ok = tuncer:destroy(V),
    true = exists(VName),
    {error, ebusy} = tuncer:create(VName, [tap, no_pi, vnet_hdr, tun_excl]),
    {ok, V2} = tuncer:create(VName, [tap, no_pi, vnet_hdr]),
    % Another kind or flags: einval, as the kernel says.
    {error, einval} = tuncer:create(VName, [tun, no_pi]),
    ok = tuncer:persist(V2, false),
    ok = tuncer:destroy(V2),
    false = exists(VName),
    % {active, _} and {port_options, _}.
    {ok, A} = tuncer:create(<<>>, [tun, no_pi, {active, once}, {port_options, []}]),
    {ok, {active, once}} = tuncer:getopt(A, active),
    [ok = tuncer:destroy(D) || D <- [M, Both, A]],
    ok.

create_errors(_Config) ->
    {error, badargs} = tuncer:create(<<"sixteen-bytes-xx">>, [tap]),
    {error, badargs} = tuncer:create(<<"tap0">>, not_a_list),
    {error, {badarg, tapp}} = tuncer:create(<<"x">>, [tapp, no_pi]),
    {error, {badarg, {active, maybe}}} = tuncer:create(<<"x">>, [tap, {active, maybe}]),
    {error, einval} = tuncer:create(<<"x">>, [no_pi]),
    {error, einval} = tuncer:create(<<"a/b">>, [tap, no_pi]),
    {error, einval} = tuncer:create(<<"a b">>, [tap, no_pi]),
    {error, enoent} = tuncer:create(<<>>, [tap, no_pi, {namespace, "erl-no-such-ns"}]),
    {error, {badarg, {namespace, 42}}} = tuncer:create(<<>>, [tap, {namespace, 42}]),
    {error, {badarg, {offload, [warp]}}} = tuncer:create(<<>>, [tun, {offload, [warp]}]),
    % The kernel's own refusal: lo is not a tun device.
    {error, einval} = tuncer:create(<<"lo">>, [tap, no_pi]),
    % A single-queue device held by another: ebusy. The caller lives on in every case.
    {ok, D} = tuncer:create(<<"erlbusy0">>, [tap, no_pi]),
    ok = tuncer:persist(D, true),
    {error, ebusy} = tuncer:create(<<"erlbusy0">>, [tap, no_pi]),
    ok = tuncer:persist(D, false),
    ok = tuncer:destroy(D),
    false = exists("erlbusy0"),
    ok.

ioctls(_Config) ->
    {ok, Dev} = tuncer:create(<<>>, [tap, no_pi]),
    Name = binary_to_list(tuncer:devname(Dev)),
    % By value, not a pointer: sysfs shows the ids themselves.
    ok = tuncer:owner(Dev, 1000),
    "1000" = sys(Name, "owner"),
    ok = tuncer:group(Dev, 1001),
    "1001" = sys(Name, "group"),
    ok = tuncer:owner(Dev, "root"),
    "0" = sys(Name, "owner"),
    {error, enoent} = tuncer:owner(Dev, "erl-no-such-user"),
    {error, einval} = tuncer:owner(Dev, -1),
    % Persist: survives destroy, up and with its addresses.
    ok = tuncer:up(Dev, "10.90.2.1/24"),
    ok = tuncer:persist(Dev, true),
    true = lists:member(persist, tuncer:flags(Dev)),
    {error, einval} = tuncer:persist(Dev, maybe),
    ok = tuncer:destroy(Dev),
    true = exists(Name),
    true = has(ip("addr show dev " ++ Name), "inet 10.90.2.1/24"),
    % Attach again, make it transient: destroy removes it.
    {ok, Again} = tuncer:create(Name, [tap, no_pi]),
    ok = tuncer:persist(Again, false),
    ok = tuncer:destroy(Again),
    false = exists(Name),
    ok.

up_addresses(_Config) ->
    "" = os:cmd("sysctl -q -w net.ipv6.conf.default.disable_ipv6=0"),
    {ok, Dev} = tuncer:create(<<>>, [tap, no_pi]),
    "" = os:cmd("sysctl -q -w net.ipv6.conf.default.disable_ipv6=1"),
    Name = binary_to_list(tuncer:devname(Dev)),
    ok = tuncer:up(Dev, "10.90.3.1"),
    ok = tuncer:up(Dev, {10, 90, 4, 1}, 24),
    ok = tuncer:up(Dev, <<"10.90.5.1/16">>),
    % Added, not replacing; an address it has already is fine.
    ok = tuncer:up(Dev, "10.90.3.1"),
    ok = tuncer:up(Dev, "fd00:90::1"),
    ok = tuncer:up(Dev, {16#fd00, 16#91, 0, 0, 0, 0, 0, 1}, 128),
    ok = tuncer:up(Dev, "fd00:92::1", 48),
    Out = ip("addr show dev " ++ Name),
    [true = has(Out, A) || A <- ["inet 10.90.3.1/32", "inet 10.90.4.1/24", "inet 10.90.5.1/16",
        "inet6 fd00:90::1/64", "inet6 fd00:91::1/128", "inet6 fd00:92::1/48"]],
    true = has(ip("link show dev " ++ Name), ",UP"),
    {ok, Addrs} = tuncer:addresses(Dev),
    true = lists:member({{10, 90, 4, 1}, 24}, Addrs),
    ok = tuncer:del_address(Dev, "10.90.4.1/24"),
    false = has(ip("addr show dev " ++ Name), "10.90.4.1"),
    % Strict parsing, range checks: errors, nothing changed, nobody crashed.
    [{error, einval} = tuncer:up(Dev, Bad) || Bad <- ["10.1", "010.0.0.1", "0x0a.0.0.1",
        "300.1.1.1", "foo", "", "fe80::1%eth0", "10.0.0.1/33", "10.0.0.1/x", {300, 0, 0, 1},
        {1, 2, 3}, {a, b, c, d}, 42, [1000000]]],
    {error, einval} = tuncer:up(Dev, "10.90.6.1", 33),
    {error, einval} = tuncer:up(Dev, "fd00::1", 129),
    {error, einval} = tuncer:up(Dev, "10.90.6.1", -1),
    true = is_process_alive(Dev),
    ok = tuncer:destroy(Dev).

dstaddr_broadcast(_Config) ->
    {ok, Tun} = tuncer:create(<<>>, [tun, no_pi]),
    T = binary_to_list(tuncer:devname(Tun)),
    {error, eaddrnotavail} = tuncer:dstaddr(Tun, "10.90.7.2"),
    ok = tuncer:up(Tun, "10.90.7.1"),
    ok = tuncer:dstaddr(Tun, "10.90.7.2"),
    true = has(ip("addr show dev " ++ T), "inet 10.90.7.1 peer 10.90.7.2/32"),
    % POINTOPOINT, never NOTRAILERS (the original's 0x20).
    Link = ip("link show dev " ++ T),
    true = has(Link, "POINTOPOINT"),
    false = has(Link, "NOTRAILERS"),
    % IPv6 peers too (the original: enodev).
    "" = os:cmd("sysctl -q -w net.ipv6.conf." ++ T ++ ".disable_ipv6=0"),
    ok = tuncer:up(Tun, "fd00:97::1/128"),
    ok = tuncer:dstaddr(Tun, "fd00:97::2"),
    true = has(ip("addr show dev " ++ T), "fd00:97::1 peer fd00:97::2"),
    ok = tuncer:destroy(Tun),
    {ok, Tap} = tuncer:create(<<>>, [tap, no_pi]),
    P = binary_to_list(tuncer:devname(Tap)),
    ok = tuncer:up(Tap, "10.90.8.1/24"),
    ok = tuncer:broadcast(Tap, "10.90.8.9"),
    true = has(ip("addr show dev " ++ P), "brd 10.90.8.9"),
    {error, einval} = tuncer:broadcast(Tap, "fd00::9"),
    {error, einval} = tuncer:broadcast(Tap, "10.90.8"),
    ok = tuncer:destroy(Tap).

down_mtu(_Config) ->
    {ok, Dev} = tuncer:create(<<>>, [tap, no_pi]),
    Name = tuncer:devname(Dev),
    N = binary_to_list(Name),
    ok = tuncer:up(Dev, "10.90.9.1/24"),
    ok = tuncer:down(Dev),
    false = has(ip("link show dev " ++ N), ",UP"),
    true = has(ip("addr show dev " ++ N), "inet 10.90.9.1/24"),
    {ok, 1500} = tuncer:mtu(Dev),
    FD = tuncer:getfd(Dev),
    {ok, FD, Name} = tuncer:mtu(Dev, 1400),
    "1400" = sys(N, "mtu"),
    {ok, 1400} = tuncer:mtu(Dev),
    {error, einval} = tuncer:mtu(Dev, 67),
    {error, einval} = tuncer:mtu(Dev, 70000),
    {error, einval} = tuncer:mtu(Dev, fast),
    {ok, FD, Name} = tuncer:mtu(Dev, 68),
    ok = tuncer:destroy(Dev).

passive_io(_Config) ->
    Dev = tun("10.90.10", []),
    {error, eagain} = tuncer:recv(Dev),
    flood("10.90.10", 7002, 3),
    {ok, P1} = tuncer:recv(Dev, 65535, 2000),
    <<1:32>> = udp_to(7002, P1),
    % A short length: the head, the rest of that packet dropped.
    {ok, Head} = tuncer:recv(Dev, 20, 2000),
    20 = byte_size(Head),
    {ok, <<>>} = tuncer:recv(Dev, 0),
    {ok, P3} = tuncer:recv(Dev),
    <<3:32>> = udp_to(7002, P3),
    {error, eagain} = tuncer:recv(Dev),
    % send/2 to the kernel: a UDP datagram from 10.90.10.2 to a socket here.
    {ok, S} = gen_udp:open(7003, [binary, {ip, {10, 90, 10, 1}}, {active, false}]),
    Pkt = udp_packet({10, 90, 10, 2}, {10, 90, 10, 1}, 5555, 7003, <<"hello">>),
    ok = tuncer:send(Dev, Pkt),
    {ok, {{10, 90, 10, 2}, 5555, <<"hello">>}} = gen_udp:recv(S, 0, 2000),
    ok = tuncer:send(Dev, [Pkt]),
    {ok, {_, _, <<"hello">>}} = gen_udp:recv(S, 0, 2000),
    % Garbage is the kernel's einval; the device lives on.
    {error, einval} = tuncer:send(Dev, <<1, 2, 3>>),
    {error, einval} = tuncer:send(Dev, <<>>),
    ok = tuncer:send(Dev, Pkt),
    {ok, _} = gen_udp:recv(S, 0, 2000),
    ok = gen_udp:close(S),
    ok = tuncer:destroy(Dev).

read_write_fd(_Config) ->
    Dev = tun("10.90.11", []),
    FD = tuncer:getfd(Dev),
    {error, eagain} = tuncer:read(FD),
    flood("10.90.11", 7004, 2),
    {ok, P} = read_fd(FD),
    <<1:32>> = udp_to(7004, P),
    {ok, Head} = tuncer:read(FD, 10),
    10 = byte_size(Head),
    {ok, S} = gen_udp:open(7005, [binary, {ip, {10, 90, 11, 1}}, {active, false}]),
    ok = tuncer:write(FD, udp_packet({10, 90, 11, 2}, {10, 90, 11, 1}, 1, 7005, <<"fd">>)),
    {ok, {_, 1, <<"fd">>}} = gen_udp:recv(S, 0, 2000),
    ok = gen_udp:close(S),
    ok = tuncer:destroy(Dev),
    % The number of a closed device reaches nothing.
    {error, ebadf} = tuncer:read(FD),
    {error, ebadf} = tuncer:write(FD, <<0>>),
    % Nor does a number that is no tunctl device (stdin, say).
    {error, ebadf} = tuncer:read(0),
    ok.

recv_timeout(_Config) ->
    Dev = tun("10.90.12", []),
    % Nothing comes: timeout after the time asked for, without spinning.
    {_, CPU0} = erlang:statistics(runtime),
    T0 = erlang:monotonic_time(millisecond),
    {error, timeout} = tuncer:recv(Dev, 65535, 300),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    true = Elapsed >= 290 andalso Elapsed < 1000,
    {_, CPU} = erlang:statistics(runtime),
    ct:pal("recv/3 waited ~p ms with ~p ms of CPU", [Elapsed, CPU - CPU0 + 0]),
    {error, timeout} = tuncer:recv(Dev, 65535, 0),
    % A packet that comes later wakes the waiter; several waiters each get one.
    Self = self(),
    Waiters = [spawn_link(fun() -> Self ! {got, tuncer:recv(Dev, 65535, infinity)} end)
        || _ <- [1, 2, 3]],
    timer:sleep(100),
    flood("10.90.12", 7006, 3),
    Got = [receive {got, {ok, P}} -> udp_to(7006, P) after 3000 -> timeout end || _ <- Waiters],
    [<<1:32>>, <<2:32>>, <<3:32>>] = lists:sort(Got),
    % In active mode: einval, as recv/1,2.
    ok = tuncer:setopt(Dev, {active, true}),
    {error, einval} = tuncer:recv(Dev, 100, 100),
    ok = tuncer:destroy(Dev),
    {error, ebadf} = tuncer:recv(Dev, 100, 100).

active_true(_Config) ->
    Dev = tun("10.90.13", [{active, true}]),
    flood("10.90.13", 7007, 5),
    Payloads = [receive {tuntap, Dev, P} -> udp_to(7007, P) after 2000 -> timeout end
        || _ <- lists:seq(1, 5)],
    Payloads = [<<I:32>> || I <- lists:seq(1, 5)],
    {error, einval} = tuncer:recv(Dev),
    % send/2 in active mode: each packet whole (the original's port merged them).
    {ok, S} = gen_udp:open(7008, [binary, {ip, {10, 90, 13, 1}}, {active, false}, {recbuf, 1 bsl 20}]),
    [ok = tuncer:send(Dev, udp_packet({10, 90, 13, 2}, {10, 90, 13, 1}, 1, 7008, <<I:32>>))
        || I <- lists:seq(1, 50)],
    [{ok, {_, _, <<I:32>>}} = gen_udp:recv(S, 0, 2000) || I <- lists:seq(1, 50)],
    % A bad packet is an error, and the device stays.
    {error, einval} = tuncer:send(Dev, <<16#0f, "garbage">>),
    true = is_process_alive(Dev),
    ok = gen_udp:close(S),
    ok = tuncer:destroy(Dev).

active_once_flood(_Config) ->
    Dev = tun("10.90.14", [{active, once}]),
    flood("10.90.14", 7009, 300),
    % Exactly one, however many wait.
    [P1] = await(Dev, 1),
    timer:sleep(100),
    {[], false} = drain(Dev),
    <<1:32>> = udp_to(7009, P1),
    {ok, {active, false}} = tuncer:getopt(Dev, active),
    ok = tuncer:setopt(Dev, {active, once}),
    [P2] = await(Dev, 1),
    timer:sleep(100),
    {[], false} = drain(Dev),
    <<2:32>> = udp_to(7009, P2),
    % The rest wait in the kernel, in order, for passive reads.
    Rest = read_all(Dev),
    Expected = [<<I:32>> || I <- lists:seq(3, 300)],
    Expected = [udp_to(7009, P) || P <- Rest],
    ok = tuncer:destroy(Dev).

active_n_flood(_Config) ->
    Dev = tun("10.90.15", [{active, 5}]),
    flood("10.90.15", 7010, 200),
    Five = await(Dev, 5),
    true = passive_note(Dev),
    timer:sleep(100),
    {[], false} = drain(Dev),
    {ok, {active, false}} = tuncer:getopt(Dev, active),
    % N adds to what is left; 0 or less means passive, with a note.
    ok = tuncer:setopt(Dev, {active, 3}),
    ok = tuncer:setopt(Dev, {active, 4}),
    Seven = await(Dev, 7),
    true = passive_note(Dev),
    timer:sleep(100),
    % One note more if the 3 ran out before the 4 were added: no packet.
    {[], _} = drain(Dev),
    % Counts added while a packet is on its way: exactly 7 each round, never 8.
    Rounds = lists:append([begin
        ok = tuncer:setopt(Dev, {active, 3}),
        ok = tuncer:setopt(Dev, {active, 4}),
        R = await(Dev, 7),
        true = passive_note(Dev),
        timer:sleep(20),
        {[], _} = drain(Dev),
        R
     end || _ <- lists:seq(1, 15)]),
    ok = tuncer:setopt(Dev, {active, 0}),
    {[], true} = drain(Dev),
    ok = tuncer:setopt(Dev, {active, 10}),
    ok = tuncer:setopt(Dev, {active, -10}),
    {ok, {active, false}} = tuncer:getopt(Dev, active),
    {error, badarg} = tuncer:setopt(Dev, {active, 40000}),
    ok = tuncer:setopt(Dev, {active, 30000}),
    {error, einval} = tuncer:setopt(Dev, {active, 30000}),
    ok = tuncer:setopt(Dev, {active, false}),
    {error, badarg} = tuncer:setopt(Dev, {active, maybe}),
    {error, badarg} = tuncer:setopt(Dev, {mode, fast}),
    % What {active, 10} delivered before {active, -10} took it back.
    {Extra, _} = drain(Dev),
    Rest = read_all(Dev),
    All = [udp_to(7010, P) || P <- Five ++ Seven ++ Rounds ++ Extra ++ Rest],
    All = [<<I:32>> || I <- lists:seq(1, length(All))],
    ok = tuncer:destroy(Dev).

active_toggle_no_loss(_Config) ->
    % Packets arrive while delivery is switched on and off: each one is delivered once,
    % either as a message or by a passive read, in order, none lost.
    Dev = tun("10.90.16", [{active, true}]),
    N = 2000,
    Sender = spawn_link(fun() ->
        {ok, S} = gen_udp:open(0, [binary, {ip, {10, 90, 16, 1}}]),
        [begin
            ok = gen_udp:send(S, {10, 90, 16, 2}, 7011, <<I:32>>),
            I rem 50 =:= 0 andalso timer:sleep(1)
         end || I <- lists:seq(1, N)],
        gen_udp:close(S)
    end),
    Got = toggle(Dev, Sender, [], 0),
    Name = binary_to_list(tuncer:devname(Dev)),
    Sent = list_to_integer(sys(Name, "statistics/tx_packets")),
    ct:pal("~p packets sent, ~p queued by the kernel, ~p received", [N, Sent, length(Got)]),
    Sent = length(Got),
    Payloads = [udp_to(7011, P) || P <- Got],
    Payloads = lists:sort(Payloads),
    ok = tuncer:destroy(Dev).

toggle(Dev, Sender, Acc, Round) ->
    Mode = lists:nth(Round rem 4 + 1, [false, true, once, 7]),
    ok = tuncer:setopt(Dev, {active, Mode}),
    timer:sleep(2),
    ok = tuncer:setopt(Dev, {active, false}),
    {Msgs, _} = drain(Dev),
    Read = read_passive(Dev, []),
    Acc1 = Acc ++ Msgs ++ Read,
    case is_process_alive(Sender) of
        true -> toggle(Dev, Sender, Acc1, Round + 1);
        false when Round < 10000 ->
            timer:sleep(50),
            {Last, _} = drain(Dev),
            Acc1 ++ Last ++ read_passive(Dev, [])
    end.

read_passive(Dev, Acc) ->
    case tuncer:recv(Dev) of
        {ok, P} -> read_passive(Dev, [P | Acc]);
        {error, eagain} -> lists:reverse(Acc)
    end.

controlling_process(_Config) ->
    Dev = tun("10.90.17", [{active, true}]),
    Name = binary_to_list(tuncer:devname(Dev)),
    flood("10.90.17", 7012, 10),
    timer:sleep(100),
    Self = self(),
    New = spawn(fun() ->
        receive go -> ok end,
        Ps = collect(Dev, []),
        Self ! {new_got, [udp_to(7012, P) || P <- Ps]},
        receive stop -> ok end
    end),
    ok = tuncer:controlling_process(Dev, New),
    % The old owner: nothing left, nothing more, and no longer the owner.
    {[], false} = drain(Dev),
    {error, not_owner} = tuncer:controlling_process(Dev, self()),
    flood("10.90.17", 7012, 5),
    timer:sleep(100),
    {[], false} = drain(Dev),
    New ! go,
    receive
        {new_got, Got} -> Got = [<<I:32>> || I <- lists:seq(1, 10)] ++ [<<I:32>> || I <- lists:seq(1, 5)]
    after 3000 -> ct:fail(no_packets_at_new_owner)
    end,
    % The same owner again: fine. The new owner's exit destroys the device.
    New ! stop,
    true = eventually(fun() -> not exists(Name) end),
    true = eventually(fun() -> not is_process_alive(Dev) end),
    ok.

%% N packets read passively from any of the queues (polling, at most Tries x 10 ms).
read_queues(_, N, 0) -> ct:fail({packets_missing, N});
read_queues(_, 0, _) -> [];
read_queues(Qs, N, Tries) ->
    case lists:append([read_passive(Q, []) || Q <- Qs]) of
        [] -> timer:sleep(10), read_queues(Qs, N, Tries - 1);
        Got -> Got ++ read_queues(Qs, N - length(Got), Tries)
    end.

collect(Dev, Acc) ->
    receive
        {tuntap, Dev, P} -> collect(Dev, [P | Acc])
    after 300 -> lists:reverse(Acc)
    end.

owner_exit(_Config) ->
    Self = self(),
    % Normal exit, a crash, and exit(Owner, kill): the device goes each time.
    Make = fun(Then) ->
        spawn(fun() ->
            {ok, D} = tuncer:create(<<>>, [tap, no_pi, {active, true}]),
            N = binary_to_list(tuncer:devname(D)),
            Self ! {dev, D, N, exists(N)},
            Then()
        end)
    end,
    [begin
        Owner = Make(Then),
        {D, Name} = receive {dev, D0, N0, true} -> {D0, N0} end,
        Kill(Owner),
        true = eventually(fun() -> not exists(Name) end),
        true = eventually(fun() -> not is_process_alive(D) end)
     end || {Then, Kill} <- [
        {fun() -> ok end, fun(_) -> ok end},
        {fun() -> exit(crash) end, fun(_) -> ok end},
        {fun() -> receive never -> ok end end, fun(P) -> exit(P, kill) end}
    ]],
    % The device's own process killed: the device goes too.
    {ok, Dev} = tuncer:create(<<>>, [tap, no_pi]),
    Name = binary_to_list(tuncer:devname(Dev)),
    unlink(Dev),
    exit(Dev, kill),
    true = eventually(fun() -> not exists(Name) end),
    {error, ebadf} = tuncer:send(Dev, <<0>>),
    {error, ebadf} = tuncer:destroy(Dev),
    {error, ebadf} = tuncer:up(Dev, "10.1.1.1"),
    ok.

deleted_outside(_Config) ->
    % Active: {tuntap_error, Dev, ebadfd}, and the device's process ends.
    process_flag(trap_exit, true),
    Dev = tun("10.90.18", [{active, true}]),
    Name = binary_to_list(tuncer:devname(Dev)),
    "" = ip("link del " ++ Name),
    receive {tuntap_error, Dev, ebadfd} -> ok after 3000 -> ct:fail(no_tuntap_error) end,
    receive {'EXIT', Dev, normal} -> ok after 3000 -> ct:fail(still_running) end,
    % Passive: calls say so.
    P = tun("10.90.19", []),
    PName = binary_to_list(tuncer:devname(P)),
    "" = ip("link del " ++ PName),
    {error, ebadfd} = tuncer:recv(P),
    {error, ebadfd} = tuncer:send(P, udp_packet({10, 90, 19, 2}, {10, 90, 19, 1}, 1, 2, <<>>)),
    ok = tuncer:destroy(P),
    process_flag(trap_exit, false),
    ok.

namespace_inside(_Config) ->
    NS = name("erl-ns-"),
    "" = ip("netns add " ++ NS),
    try
        {ok, Dev} = tuncer:create(<<"erlns0">>, [tun, no_pi, {namespace, NS}]),
        false = exists("erlns0"),
        true = has(ip("-n " ++ NS ++ " link show erlns0"), "erlns0"),
        % Configured inside, from here.
        ok = tuncer:up(Dev, "10.90.20.1/24"),
        ok = tuncer:dstaddr(Dev, "10.90.20.2"),
        {ok, FD, <<"erlns0">>} = tuncer:mtu(Dev, 1300),
        true = is_integer(FD),
        {ok, 1300} = tuncer:mtu(Dev),
        Out = ip("-n " ++ NS ++ " addr show erlns0"),
        true = has(Out, "inet 10.90.20.1 peer 10.90.20.2"),
        true = has(Out, "mtu 1300"),
        ok = tuncer:down(Dev),
        % A path works as well as a name.
        {ok, ByPath} = tuncer:create(<<"erlns1">>, [tap, no_pi, {namespace, "/run/netns/" ++ NS}]),
        true = has(ip("-n " ++ NS ++ " link show erlns1"), "erlns1"),
        ok = tuncer:destroy(ByPath),
        ok = tuncer:destroy(Dev),
        false = has(ip("-n " ++ NS ++ " link show"), "erlns")
    after
        ip("netns del " ++ NS)
    end.

multi_queue(_Config) ->
    {ok, Dev} = tuncer:create(<<>>, [tun, no_pi, multi_queue]),
    Name = binary_to_list(tuncer:devname(Dev)),
    {ok, Q} = tuncer:attach_queue(Dev),
    true = Q =/= Dev,
    <<_/binary>> = tuncer:devname(Q),
    true = tuncer:getfd(Q) =/= tuncer:getfd(Dev),
    ok = tuncer:up(Q, "10.90.21.1/24"),
    {ok, S} = gen_udp:open(7013, [binary, {ip, {10, 90, 21, 1}}, {active, false}]),
    ok = tuncer:send(Q, udp_packet({10, 90, 21, 2}, {10, 90, 21, 1}, 1, 7013, <<"q">>)),
    {ok, {_, _, <<"q">>}} = gen_udp:recv(S, 0, 2000),
    ok = gen_udp:close(S),
    % Packets spread over the queues: every one is read from one of them.
    flood("10.90.21", 7014, 20),
    20 = length(read_queues([Dev, Q], 20, 500)),
    % Destroying the queue detaches it; the device stays.
    ok = tuncer:destroy(Q),
    true = exists(Name),
    {error, ebadf} = tuncer:send(Q, <<0>>),
    {ok, Q2} = tuncer:attach_queue(Dev),
    ok = tuncer:destroy(Dev),
    false = exists(Name),
    {error, ebadf} = tuncer:send(Q2, <<0>>),
    % Single-queue devices have no more queues.
    {ok, Single} = tuncer:create(<<>>, [tun, no_pi]),
    {error, _} = tuncer:attach_queue(Single),
    ok = tuncer:destroy(Single),
    ok.

offload(_Config) ->
    {ok, Dev} = tuncer:create(<<>>, [tun, no_pi, {offload, [csum, tso4, tso6]}]),
    true = lists:member(vnet_hdr, tuncer:flags(Dev)),
    Accepted = tuncer:offload(Dev),
    true = lists:member(tso4, Accepted) andalso lists:member(csum, Accepted),
    % A TCP super-packet the way the device hands one over: virtio-net header (NEEDS_CSUM,
    % TCPv4, 40 header bytes, 100 per segment), IPv4, TCP, 250 bytes.
    Payload = list_to_binary(lists:duplicate(250, $x)),
    Ip = <<4:4, 5:4, 0, (40 + 250):16, 1:16, 2#010:3, 0:13, 64, 6, 0:16, 10, 90, 22, 1, 10,
        90, 22, 2>>,
    Tcp = <<1000:16, 2000:16, 1:32, 0:32, 5:4, 0:4, 16#18, 65535:16, 0:16, 0:16>>,
    Super = <<1, 1, 40:16/little, 100:16/little, 20:16/little, 16:16/little, Ip/binary,
        Tcp/binary, Payload/binary>>,
    #{gso_type := tcpv4, gso_size := 100, needs_csum := true} = tunctl_offload:header(Super),
    {ok, Segs} = tunctl_offload:split(Super),
    [140, 140, 90] = [byte_size(S) || S <- Segs],
    % Each one valid: the IPv4 checksum of every header checks out.
    [0 = checksum(binary:part(S, 0, 20)) || S <- Segs],
    % And back together: one super-packet with its header.
    {ok, [Back]} = tunctl_offload:coalesce(Segs),
    #{gso_type := tcpv4, gso_size := 100} = tunctl_offload:header(Back),
    true = byte_size(Back) =:= 10 + 40 + 250,
    % Again, and a single packet alone (the NIF reuses its buffers): the same results,
    % the single packet with a clean (no GSO) header.
    [{ok, [Back]} = tunctl_offload:coalesce(Segs) || _ <- lists:seq(1, 3)],
    {ok, [One]} = tunctl_offload:coalesce([hd(Segs)]),
    #{gso_type := none} = tunctl_offload:header(One),
    {error, einval} = tunctl_offload:split(<<1, 2, 3>>),
    ok = tuncer:destroy(Dev).

tunctl_low_level(_Config) ->
    {ok, H, Name} = tunctl:create(<<"erlll%d">>, [tap, no_pi]),
    N = binary_to_list(Name),
    true = exists(N),
    true = is_integer(tunctl:getfd(H)),
    ok = tunctl:owner(H, 1002),
    "1002" = sys(N, "owner"),
    ok = tunctl:group(H, 1003),
    "1003" = sys(N, "group"),
    % By name, in this namespace, as the original did.
    ok = tunctl:up(Name, {10, 90, 23, 1}),
    ok = tunctl:up(Name, {10, 90, 24, 1}, 24),
    ok = tunctl:dstaddr(Name, {10, 90, 23, 2}),
    ok = tunctl:broadcast(Name, {10, 90, 23, 255}),
    {ok, H, Name} = tunctl:mtu(H, Name, 1400),
    "1400" = sys(N, "mtu"),
    ok = tunctl:down(Name),
    {error, enodev} = tunctl:up(<<"erl-nothing">>, {10, 1, 1, 1}),
    % Persist, close: it stays; attach again, make it transient, close: gone.
    ok = tunctl:persist(H, true),
    ok = tunctl:close(H),
    ok = tunctl:close(H),
    true = exists(N),
    {ok, H2, Name} = tunctl:create(Name, [tap, no_pi]),
    ok = tunctl:persist(H2, false),
    ok = tunctl:close(H2),
    false = exists(N),
    {error, ebadf} = tunctl:persist(H2, true),
    % A handle nobody holds any more: the garbage collector closes it.
    Self = self(),
    spawn(fun() ->
        {ok, _, Gc} = tunctl:create(<<>>, [tap, no_pi]),
        Self ! {gc, binary_to_list(Gc)}
    end),
    Gc = receive {gc, G} -> G end,
    true = eventually(fun() -> not exists(Gc) end),
    % header/1: flags native, protocol in network order.
    {tun_pi, 0, 16#86DD, <<"rest">>} = tunctl:header(<<0:16, 16#86DD:16, "rest">>),
    ok = try tunctl:header(<<1, 2>>) catch error:badarg -> ok end,
    ok.

bad_arguments(_Config) ->
    {ok, Dev} = tuncer:create(<<>>, [tun, no_pi]),
    {error, einval} = tuncer:send(Dev, not_a_packet),
    {error, einval} = tuncer:recv(Dev, -1),
    {error, einval} = tuncer:recv(Dev, 10, -5),
    {error, einval} = tuncer:recv(Dev, 10, soon),
    {error, einval} = tuncer:read(0, -1),
    {error, ebadf} = tuncer:read(123456),
    {error, badarg} = tuncer:setopt(Dev, nothing),
    {error, badarg} = tuncer:controlling_process(Dev, not_a_pid),
    {error, einval} = tuncer:persist(Dev, 1),
    {error, einval} = tuncer:getopt(Dev, speed),
    ok = try tuncer:header(not_a_binary) catch error:badarg -> ok end,
    % The NIF itself: badarg for terms that are no device, never a crash of the VM.
    [ok = try F() of R -> ct:fail({no_badarg, R}) catch error:badarg -> ok end || F <- [
        fun() -> tunctl_nif:send(make_ref(), <<1>>) end,
        fun() -> tunctl_nif:send(Dev, [not_binary]) end,
        fun() -> tunctl_nif:recv(Dev, -1) end,
        fun() -> tunctl_nif:create(<<"x">>, [{bogus, 1}]) end,
        fun() -> tunctl_nif:create(not_binary, []) end,
        fun() -> tunctl_nif:up(Dev, <<1, 2, 3>>, 24) end,
        fun() -> tunctl_nif:set_active(Dev, sometimes, self()) end,
        fun() -> tunctl_nif:gro_coalesce([<<0>> || _ <- lists:seq(1, 100)], false) end
    ]],
    {error, ebadf} = tunctl_nif:send(self(), <<1>>),
    {error, ebadf} = tunctl_nif:send(999999, <<1>>),
    true = is_process_alive(Dev),
    ok = tuncer:destroy(Dev),
    ok.

no_fd_leak(_Config) ->
    Before = fds(),
    Links = ip("-o link show"),
    lists:foreach(
        fun(I) ->
            Opts = case I rem 4 of
                0 -> [tun, no_pi];
                1 -> [tap, no_pi, {active, true}];
                2 -> [tun, no_pi, vnet_hdr, {active, once}];
                3 -> [tap]
            end,
            {ok, D} = tuncer:create(<<>>, Opts),
            I rem 10 =:= 0 andalso (ok = tuncer:up(D, "10.90.25.1/24")),
            ok = tuncer:destroy(D)
        end,
        lists:seq(1, 1000)
    ),
    % Failures leak nothing either.
    [{error, _} = tuncer:create(<<"lo">>, [tap, no_pi]) || _ <- lists:seq(1, 100)],
    erlang:garbage_collect(),
    true = eventually(fun() -> fds() =:= Before end),
    Links = ip("-o link show"),
    ct:pal("fds before and after 1000 cycles: ~p, ~p", [Before, fds()]),
    ok.
