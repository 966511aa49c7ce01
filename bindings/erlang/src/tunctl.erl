%% @doc The low-level layer of the Erlang original's tunctl, over the tunctl Rust library.
%%
%% Functions take a device handle (what {@link create/2} returns) or an interface name, as
%% the original's did. A name is looked up in the VM's own network namespace; a handle
%% configures its device wherever it lives (a device made with `{namespace, NS}' is configured
%% inside NS). Most programs want {@link tuncer} instead, which gives each device an owner
%% process and active mode.
%%
%% == Differences from the Erlang original ==
%%
%% <ul>
%% <li>`create/2' returns `{ok, Handle, Name}' where `Handle' is an opaque handle, not an
%%   integer: the fd behind it is close-on-exec and closed when the handle is closed
%%   ({@link close/1}) or garbage-collected, so it cannot leak, and a stale number can never
%%   reach another device. {@link getfd/1} gives the number, which {@link tuncer:read/2} and
%%   {@link tuncer:write/2} take while the device is open.</li>
%% <li>`owner/2' and `group/2' set the uid and gid themselves (the original passed a pointer
%%   and set garbage ids); they also take a user or group name.</li>
%% <li>`up/2,3', `dstaddr/2', `broadcast/2', `down/1' and `mtu/3' use rtnetlink, for IPv4
%%   and IPv6 alike (the original used ioctls, and `sudo ifconfig' off Linux); `up/3' takes
%%   IPv6 prefixes up to 128. `up' adds the address (an address the device has already is
%%   fine); it does not replace the primary IPv4 address as SIOCSIFADDR did.</li>
%% <li>`dstaddr/2' sets the peer of the device's address (the original set the flag
%%   NOTRAILERS, 0x20, where it meant POINTOPOINT) and works for IPv6 too.</li>
%% <li>`header/1' decodes the protocol in network byte order: 16#0800 for IPv4 (the original
%%   gave 8).</li>
%% <li>Bad input is `{error, Reason}' (addresses with octets over 255, legacy forms such as
%%   `"10.1"' or octal `"010.0.0.1"', out-of-range prefixes, unknown options), never a crash
%%   of the caller or a silently changed value.</li>
%% <li>Creating a device falls back to the privileged helper `tunctl-helper' (see the
%%   project's README) when the VM lacks CAP_NET_ADMIN; so does configuring a device the
%%   helper made for this user.</li>
%% </ul>
-module(tunctl).

-export([
    create/0, create/1, create/2,
    persist/2,
    owner/2,
    group/2,
    up/2, up/3,
    dstaddr/2,
    broadcast/2,
    down/1,
    mtu/3,
    header/1
]).

%% Ours.
-export([
    close/1,
    getfd/1,
    mtu/1,
    addresses/1,
    del_address/2
]).

%% Shared with tuncer.
-export([options/1, active_mode/1, address/1, prefix/2, id/2]).

-type handle() :: reference().
%% An open device (a NIF resource). Closed by {@link close/1}, or when garbage-collected.
-type fd() :: handle() | integer().
%% A handle, or the fd number {@link getfd/1} gave.
-type dev() :: binary() | handle().
%% An interface name in the VM's namespace, or a handle.
-type uint16_t() :: 0..16#ffff.
-type options() ::
    tun
    | tap
    | multi_queue
    | no_pi
    | one_queue
    | vnet_hdr
    | tun_excl
    | {namespace, string() | binary()}
    | {offload, [csum | tso4 | tso6 | tso_ecn | uso4 | uso6]}
    | {owner, integer() | string()}
    | {group, integer() | string()}.
-type address() :: inet:ip_address() | string() | binary().

-export_type([handle/0, fd/0, dev/0, uint16_t/0, options/0, address/0]).

-define(IFNAMSIZ, 16).

%% @doc Creates a tap device named by the kernel (`tap0', `tap1', ...).
-spec create() -> {ok, handle(), binary()} | {error, term()}.
create() ->
    create(<<>>).

%% @doc Creates a tap device without packet-information header (`[tap, no_pi]').
-spec create(binary() | string()) -> {ok, handle(), binary()} | {error, term()}.
create(Ifname) ->
    create(Ifname, [tap, no_pi]).

%% @doc Creates a device, or attaches to an existing persistent one of that name and kind.
%%
%% Options: `tun' or `tap' (one of them is needed; `tun' wins if both are given), `no_pi'
%% (without it each packet starts with the 4-byte header {@link header/1} decodes),
%% `one_queue' (ignored by Linux since 3.8), `vnet_hdr', `tun_excl' (refuse an existing
%% device: `{error, ebusy}'), `multi_queue', and ours: `{namespace, NS}' (a name under
%% /run/netns, or a path such as "/proc/PID/ns/net": the device is born there and
%% configured there), `{offload, Flags}' (implies `vnet_hdr'; see {@link tunctl_offload}),
%% `{owner, User}' and `{group, Group}' (set before anyone else can open the device).
%% `{active, _}' and `{port_options, _}' belong to {@link tuncer} and are ignored here. An
%% unknown option is `{error, {badarg, Option}}'.
%%
%% Errors are the kernel's: `ebusy' (held by another process, or `tun_excl'), `einval'
%% (a name of another kind or flags, an invalid name), `eperm' (no CAP_NET_ADMIN and no
%% helper); `enoent' for a namespace that does not exist.
-spec create(binary() | string(), [options()]) -> {ok, handle(), binary()} | {error, term()}.
create(Ifname, Opts) when is_list(Ifname) ->
    case unicode:characters_to_binary(Ifname) of
        B when is_binary(B) -> create(B, Opts);
        _ -> {error, badargs}
    end;
create(Ifname, Opts) when is_binary(Ifname), byte_size(Ifname) < ?IFNAMSIZ, is_list(Opts) ->
    case options(Opts) of
        {ok, _Active, NifOpts} -> tunctl_nif:create(Ifname, NifOpts);
        {error, _} = Error -> Error
    end;
create(_, _) ->
    {error, badargs}.

%% @doc Closes a handle: a device that is not persistent is removed; a persistent one stays
%% as it is (up, with its addresses). Closing twice is `ok'.
-spec close(handle()) -> ok | {error, term()}.
close(Handle) ->
    tunctl_nif:close(Handle).

%% @doc The fd number of a handle, for {@link tuncer:read/2} and {@link tuncer:write/2}.
-spec getfd(fd()) -> integer() | {error, ebadf}.
getfd(FD) ->
    tunctl_nif:getfd(FD).

%% @doc Makes the device outlive its fd (TUNSETPERSIST).
-spec persist(fd(), boolean()) -> ok | {error, term()}.
persist(FD, Bool) when is_boolean(Bool) ->
    tunctl_nif:persist(FD, Bool);
persist(_, _) ->
    {error, einval}.

%% @doc Lets a user open the device without CAP_NET_ADMIN (TUNSETOWNER with the uid
%% itself). Takes a uid or a user name.
-spec owner(fd(), integer() | string() | binary()) -> ok | {error, term()}.
owner(FD, User) ->
    case id(user, User) of
        {ok, Uid} -> tunctl_nif:owner(FD, Uid);
        Error -> Error
    end.

%% @doc Lets a group open the device without CAP_NET_ADMIN (TUNSETGROUP with the gid
%% itself). Takes a gid or a group name.
-spec group(fd(), integer() | string() | binary()) -> ok | {error, term()}.
group(FD, Group) ->
    case id(group, Group) of
        {ok, Gid} -> tunctl_nif:group(FD, Gid);
        Error -> Error
    end.

%% @doc Adds an address (/32 for IPv4, /64 for IPv6, or the prefix of an `"ADDR/N"' string)
%% and brings the device up.
-spec up(dev(), address()) -> ok | {error, term()}.
up(Dev, Addr) ->
    case address(Addr) of
        {ok, Bin, Prefix} -> tunctl_nif:up(Dev, Bin, Prefix);
        Error -> Error
    end.

%% @doc Adds `Addr/Mask' (0 to 32 for IPv4, 0 to 128 for IPv6) and brings the device up.
-spec up(dev(), address(), 0..128) -> ok | {error, term()}.
up(Dev, Addr, Mask) ->
    case address(Addr) of
        {ok, Bin, _} ->
            case prefix(Bin, Mask) of
                ok -> tunctl_nif:up(Dev, Bin, Mask);
                Error -> Error
            end;
        Error ->
            Error
    end.

%% @doc Sets the point-to-point peer of the device's address of the same family.
%% `{error, eaddrnotavail}' if it has none.
-spec dstaddr(dev(), address()) -> ok | {error, term()}.
dstaddr(Dev, Addr) ->
    case address(Addr) of
        {ok, Bin, _} -> tunctl_nif:dstaddr(Dev, Bin);
        Error -> Error
    end.

%% @doc Sets the broadcast address of the device's IPv4 address.
-spec broadcast(dev(), address()) -> ok | {error, term()}.
broadcast(Dev, Addr) ->
    case address(Addr) of
        {ok, <<_:4/binary>> = Bin, _} -> tunctl_nif:broadcast(Dev, Bin);
        {ok, _, _} -> {error, einval};
        Error -> Error
    end.

%% @doc Brings the device down; its addresses stay.
-spec down(dev()) -> ok | {error, term()}.
down(Dev) ->
    tunctl_nif:down(Dev).

%% @doc Sets the MTU of `Ifname' (or of the handle's device). Returns `{ok, FD, Ifname}' as
%% the original did.
-spec mtu(fd(), dev(), integer()) -> {ok, fd(), dev()} | {error, term()}.
mtu(FD, Ifname, MTU) when is_integer(MTU) ->
    case tunctl_nif:set_mtu(Ifname, MTU) of
        ok -> {ok, FD, Ifname};
        Error -> Error
    end;
mtu(_, _, _) ->
    {error, einval}.

%% @doc The MTU.
-spec mtu(dev()) -> {ok, integer()} | {error, term()}.
mtu(Dev) ->
    tunctl_nif:mtu(Dev).

%% @doc The device's addresses, `[{Address, Prefix}]'.
-spec addresses(dev()) -> {ok, [{inet:ip_address(), 0..128}]} | {error, term()}.
addresses(Dev) ->
    tunctl_nif:addresses(Dev).

%% @doc Removes an address (`"ADDR/N"', or a bare address with its default prefix).
-spec del_address(dev(), address()) -> ok | {error, term()}.
del_address(Dev, Addr) ->
    case address(Addr) of
        {ok, Bin, Prefix} -> tunctl_nif:del_address(Dev, Bin, Prefix);
        Error -> Error
    end.

%% @doc Decodes the 4-byte packet-information header of a device created without `no_pi':
%% `{tun_pi, Flags, Proto, Payload}', Proto in network order (16#0800 for IPv4, 16#86DD for
%% IPv6). A packet shorter than 4 bytes is badarg.
-spec header(binary()) -> {tun_pi, uint16_t(), uint16_t(), binary()}.
header(<<Flags:16/native, Proto:16/big, Payload/binary>>) ->
    {tun_pi, Flags, Proto, Payload};
header(_) ->
    erlang:error(badarg).

%%--------------------------------------------------------------------
%% Shared with tuncer
%%--------------------------------------------------------------------

%% @private
%% The options the NIF takes, and the active mode: `{ok, Active, NifOpts}'.
options(Opts) ->
    options(Opts, false, []).

options([], Active, Acc) ->
    {ok, Active, lists:reverse(Acc)};
options([Flag | Rest], Active, Acc) when
    Flag =:= tun;
    Flag =:= tap;
    Flag =:= no_pi;
    Flag =:= one_queue;
    Flag =:= vnet_hdr;
    Flag =:= tun_excl;
    Flag =:= multi_queue
->
    options(Rest, Active, [Flag | Acc]);
options([{active, A} = Opt | Rest], _, Acc) ->
    case active_mode(A) of
        {ok, Mode} -> options(Rest, Mode, Acc);
        error -> {error, {badarg, Opt}}
    end;
options([{port_options, L} | Rest], Active, Acc) when is_list(L) ->
    % The original's Erlang port options: there is no port here.
    options(Rest, Active, Acc);
options([{namespace, NS} = Opt | Rest], Active, Acc) when is_list(NS); is_binary(NS) ->
    case unicode:characters_to_binary(NS) of
        B when is_binary(B), byte_size(B) > 0 -> options(Rest, Active, [{namespace, B} | Acc]);
        _ -> {error, {badarg, Opt}}
    end;
options([{offload, Flags} = Opt | Rest], Active, Acc) when is_list(Flags) ->
    Known = [csum, tso4, tso6, tso_ecn, uso4, uso6],
    case lists:all(fun(F) -> lists:member(F, Known) end, Flags) of
        true -> options(Rest, Active, [Opt | Acc]);
        false -> {error, {badarg, Opt}}
    end;
options([{Kind, Who} = Opt | Rest], Active, Acc) when Kind =:= owner; Kind =:= group ->
    case id(Kind, Who) of
        {ok, Id} -> options(Rest, Active, [{Kind, Id} | Acc]);
        _ -> {error, {badarg, Opt}}
    end;
options([Other | _], _, _) ->
    {error, {badarg, Other}};
options(_, _, _) ->
    {error, badargs}.

%% @private
active_mode(true) -> {ok, true};
active_mode(false) -> {ok, false};
active_mode(once) -> {ok, once};
active_mode(N) when is_integer(N), N >= -32768, N =< 32767 -> {ok, N};
active_mode(_) -> error.

%% @private
%% A uid or gid from a number or a name.
id(_, N) when is_integer(N), N >= 0, N < 16#ffffffff -> {ok, N};
id(user, Name) when is_list(Name); is_binary(Name) -> name_id(fun tunctl_nif:user_id/1, Name);
id(owner, Name) when is_list(Name); is_binary(Name) -> name_id(fun tunctl_nif:user_id/1, Name);
id(group, Name) when is_list(Name); is_binary(Name) -> name_id(fun tunctl_nif:group_id/1, Name);
id(_, _) -> {error, einval}.

name_id(Lookup, Name) ->
    case unicode:characters_to_binary(Name) of
        B when is_binary(B) -> Lookup(B);
        _ -> {error, einval}
    end.

%% @private
%% An address as the NIF takes it (4 or 16 bytes) with its default prefix, or the prefix of
%% an "ADDR/N" string: `{ok, Bin, Prefix}' or `{error, einval}'.
address({A, B, C, D} = T) ->
    case lists:all(fun(X) -> is_integer(X) andalso X >= 0 andalso X =< 255 end, tuple_to_list(T)) of
        true -> {ok, <<A, B, C, D>>, 32};
        false -> {error, einval}
    end;
address({_, _, _, _, _, _, _, _} = T) ->
    L = tuple_to_list(T),
    case lists:all(fun(X) -> is_integer(X) andalso X >= 0 andalso X =< 16#ffff end, L) of
        true -> {ok, <<<<X:16>> || X <- L>>, 64};
        false -> {error, einval}
    end;
address(Bin) when is_binary(Bin) ->
    try binary_to_list(Bin) of
        S -> address(S)
    catch
        error:badarg -> {error, einval}
    end;
address(Str) when is_list(Str) ->
    case io_lib:char_list(Str) andalso string:split(Str, "/") of
        false ->
            {error, einval};
        [Addr] ->
            parsed(Addr, default);
        [Addr, Len] ->
            case string:to_integer(Len) of
                {N, []} when N >= 0 -> parsed(Addr, N);
                _ -> {error, einval}
            end
    end;
address(_) ->
    {error, einval}.

parsed(Str, Prefix) ->
    % Strict: dotted quads only (no "10.1", octal or hex), and no IPv6 scope ("%eth0").
    case lists:member($%, Str) orelse inet:parse_strict_address(Str) of
        {ok, Tuple} ->
            {ok, Bin, Default} = address(Tuple),
            case Prefix of
                default ->
                    {ok, Bin, Default};
                N ->
                    case prefix(Bin, N) of
                        ok -> {ok, Bin, N};
                        Error -> Error
                    end
            end;
        _ ->
            {error, einval}
    end.

%% @private
prefix(<<_:4/binary>>, N) when is_integer(N), N >= 0, N =< 32 -> ok;
prefix(<<_:16/binary>>, N) when is_integer(N), N >= 0, N =< 128 -> ok;
prefix(_, _) -> {error, einval}.
