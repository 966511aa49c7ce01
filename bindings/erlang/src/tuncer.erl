%% @doc TUN/TAP devices owned by Erlang processes: the Erlang original's `tuncer', over the
%% tunctl Rust library.
%%
%% {@link create/2} makes a device and a process for it (the `Dev' pid every function takes)
%% linked to the caller, its owner. When the owner exits, for any reason (`kill' included),
%% the device goes; a persistent device stays, as configured. In active mode the owner
%% receives each packet as `{tuntap, Dev, Packet}', and `{tuntap_error, Dev, Reason}' when the
%% device fails (`ebadfd' once it was deleted from outside; the device's process then stops).
%%
%% ```
%% {ok, Dev} = tuncer:create(<<"tap0">>, [tap, no_pi, {active, true}]),
%% ok = tuncer:up(Dev, "10.10.10.1/24"),
%% receive {tuntap, Dev, Frame} -> ok = tuncer:send(Dev, Frame) end,
%% ok = tuncer:destroy(Dev).
%% '''
%%
%% == Ours, beyond the original ==
%%
%% <ul>
%% <li>`{active, once}' and `{active, N}' (in {@link create/2} and {@link setopt/2}), as
%%   sockets have them: exactly that many packets, then passive; a count that runs out sends
%%   `{tuntap_passive, Dev}'. Flow control is exact: once `setopt(Dev, {active, false})'
%%   returns, no more packets arrive, and none is lost between the modes.</li>
%% <li>{@link recv/3}: waits up to a timeout (milliseconds or `infinity') for a packet,
%%   without polling and without holding a scheduler: `{error, timeout}' when none came.</li>
%% <li>`{namespace, Name}': a name under /run/netns (or a path); the device is born there
%%   and `up', `down', `dstaddr', `broadcast', `mtu' configure it there, from a VM that
%%   stays in its own namespace.</li>
%% <li>{@link attach_queue/1}: one more queue of a `multi_queue' device, as a device process
%%   of its own.</li>
%% <li>`{offload, Flags}' (implies `vnet_hdr'): the kernel hands over and takes 64 KiB TCP
%%   (and UDP) super-packets behind a virtio-net header; {@link offload/1} says what it
%%   accepted, and {@link tunctl_offload} splits (GSO) and coalesces (GRO) them.</li>
%% <li>`{owner, User}', `{group, Group}' at creation; {@link addresses/1},
%%   {@link del_address/2}.</li>
%% <li>Without CAP_NET_ADMIN, creation (and configuration of devices it made) goes through
%%   the privileged helper `tunctl-helper' when one is installed and its policy allows it
%%   (see the project's README).</li>
%% </ul>
%%
%% == Differences from the Erlang original ==
%%
%% <ul>
%% <li>No fd leaks, on any path: the device's fd is owned by the NIF and closed with the
%%   device's process however it ends (`destroy/1', the owner's exit, a crash,
%%   `exit(Dev, kill)'), also for a device in another namespace, moved, or deleted from
%%   outside (the original's `terminate' crashed there and leaked the fd).</li>
%% <li>After {@link controlling_process/2} the new owner's exit destroys the device (in the
%%   original neither owner's did).</li>
%% <li>`send/2' in active mode writes each packet by itself (the original's port merged
%%   back-to-back packets into one write, so all but the first were lost), and a bad packet
%%   is `{error, einval}' without killing the device.</li>
%% <li>Reads and writes go straight to the device from the calling process: active delivery
%%   is one message hop (a reader thread to the owner), not two.</li>
%% <li>`owner/2', `group/2' by value (the original set garbage ids); `dstaddr/2' sets the
%%   peer without the NOTRAILERS flag; IPv6 `up' over rtnetlink, with prefixes to 128
%%   (`up/3' took at most 32); addresses are added, not replacing the primary one; see
%%   {@link tunctl}.</li>
%% <li>`create/2' failing is `{error, Reason}' and never sends the caller an exit signal
%%   (the original, on OTP 25, returned `{error, {bad_return_value, ...}}' and killed a
%%   caller that did not trap exits); a malformed address is `{error, einval}', not a crash
%%   of the device's process. A call on a device that is gone is `{error, ebadf}', not an
%%   exit of the caller.</li>
%% <li>`flags/1' returns the kernel's flags as atoms (`[tun, no_pi, persist]'), not the
%%   option list; `mtu/1' reads the MTU where the device lives.</li>
%% <li>`header/1' gives the protocol in network order (16#0800 for IPv4).</li>
%% <li>`{port_options, _}' is accepted and ignored: there is no Erlang port.</li>
%% <li>`getfd/1' gives the fd number; {@link read/2} and {@link write/2} accept only the
%%   numbers of open tunctl devices (`{error, ebadf}' otherwise), so a stale number cannot
%%   reach an unrelated file.</li>
%% </ul>
-module(tuncer).

-behaviour(gen_server).

-export([
    create/0, create/1, create/2,
    devname/1,
    flags/1,
    getfd/1,
    destroy/1,

    persist/2,
    owner/2,
    group/2,

    read/1, read/2,
    write/2,

    send/2,
    recv/1, recv/2, recv/3,

    header/1,

    up/2, up/3,
    dstaddr/2,
    broadcast/2,
    down/1,
    mtu/1, mtu/2,

    controlling_process/2,
    setopt/2
]).

%% Ours.
-export([
    attach_queue/1,
    offload/1,
    addresses/1,
    del_address/2,
    getopt/2
]).

-export([
    init/1,
    handle_call/3,
    handle_cast/2,
    handle_info/2,
    terminate/2,
    code_change/3
]).

-type dev() :: pid().
-type active() :: boolean() | once | -32768..32767.
-type options() ::
    tunctl:options()
    | {active, active()}
    | {port_options, list()}.

-export_type([dev/0, active/0, options/0]).

-record(state, {
    handle :: tunctl:handle() | closed,
    owner :: pid(),
    % recv/3 callers waiting for a packet: [{From, Len, TimerRef}]
    waiters = [] :: [{gen_server:from(), non_neg_integer(), reference() | infinity}],
    notified = false :: boolean()
}).

-define(IFNAMSIZ, 16).
-define(MAXLEN, 16#FFFF).

%%--------------------------------------------------------------------
%% Creating and destroying
%%--------------------------------------------------------------------

%% @doc A tap device, named by the kernel (`tap0', ...), passive.
-spec create() -> {ok, dev()} | {error, term()}.
create() ->
    create(<<>>).

%% @doc A tap device named `Ifname' (`[tap, no_pi]').
-spec create(binary() | string()) -> {ok, dev()} | {error, term()}.
create(Ifname) ->
    create(Ifname, [tap, no_pi]).

%% @doc Creates a device (or attaches to an existing persistent one) and a process that owns
%% it for the caller. Options: those of {@link tunctl:create/2}, and
%% `{active, true | false | once | N}' (default `false') and `{port_options, _}' (ignored).
%% An empty name lets the kernel choose (`tun0', `tap0', ...). A name of 16 bytes or more,
%% or options that are not a list, give `{error, badargs}' as in the original; an unknown
%% option `{error, {badarg, Option}}'.
-spec create(binary() | string(), [options()]) -> {ok, dev()} | {error, term()}.
create(Ifname, Opt) when is_list(Ifname) ->
    case unicode:characters_to_binary(Ifname) of
        B when is_binary(B) -> create(B, Opt);
        _ -> {error, badargs}
    end;
create(Ifname, Opt) when is_binary(Ifname), byte_size(Ifname) < ?IFNAMSIZ, is_list(Opt) ->
    case tunctl:options(Opt) of
        {ok, Active, NifOpts} ->
            case tunctl_nif:create(Ifname, NifOpts) of
                {ok, Handle, _Name} -> start(Handle, Active);
                {error, _} = Error -> Error
            end;
        {error, _} = Error ->
            Error
    end;
create(_, _) ->
    {error, badargs}.

start(Handle, Active) ->
    case gen_server:start_link(?MODULE, {Handle, Active, self()}, []) of
        {ok, Pid} ->
            {ok, Pid};
        ignore ->
            _ = tunctl_nif:close(Handle),
            {error, eagain};
        Error ->
            _ = tunctl_nif:close(Handle),
            Error
    end.

%% @doc One more queue of a `multi_queue' device, as a device process of its own owned by
%% the caller: it reads and writes its own queue (active mode included) and configures the
%% same device. Destroying it detaches the queue only.
-spec attach_queue(dev()) -> {ok, dev()} | {error, term()}.
attach_queue(Dev) ->
    case tunctl_nif:attach_queue(Dev) of
        {ok, Handle} -> start(Handle, false);
        Error -> Error
    end.

%% @doc Removes the device (a persistent one stays, up and configured, as in the original)
%% and stops its process.
-spec destroy(dev()) -> ok | {error, term()}.
destroy(Dev) when is_pid(Dev) ->
    call(Dev, destroy).

%%--------------------------------------------------------------------
%% About the device
%%--------------------------------------------------------------------

%% @doc The interface name.
-spec devname(dev()) -> binary() | {error, ebadf}.
devname(Dev) ->
    tunctl_nif:name(Dev).

%% @doc The device's flags as the kernel reports them: `tun' or `tap', `no_pi', `vnet_hdr',
%% `multi_queue', `persist'.
-spec flags(dev()) -> [atom()] | {error, term()}.
flags(Dev) ->
    tunctl_nif:flags(Dev).

%% @doc The fd number, for {@link read/2} and {@link write/2}.
-spec getfd(dev()) -> integer() | {error, ebadf}.
getfd(Dev) ->
    tunctl_nif:getfd(Dev).

%% @doc The offloads the kernel accepted (`{offload, Flags}' at creation).
-spec offload(dev()) -> [atom()] | {error, ebadf}.
offload(Dev) ->
    tunctl_nif:offload(Dev).

%% @doc `{active, Mode}' now (what is left of a count).
-spec getopt(dev(), active) -> {ok, {active, active()}} | {error, term()}.
getopt(Dev, active) ->
    case tunctl_nif:active(Dev) of
        {error, _} = Error -> Error;
        Mode -> {ok, {active, Mode}}
    end;
getopt(_, _) ->
    {error, einval}.

%%--------------------------------------------------------------------
%% TUN ioctls
%%--------------------------------------------------------------------

%% @doc Makes the device outlive its owner (TUNSETPERSIST).
-spec persist(dev(), boolean()) -> ok | {error, term()}.
persist(Dev, Bool) ->
    tunctl:persist(Dev, Bool).

%% @doc Lets a user (uid or name) open the device without CAP_NET_ADMIN.
-spec owner(dev(), integer() | string() | binary()) -> ok | {error, term()}.
owner(Dev, Owner) ->
    tunctl:owner(Dev, Owner).

%% @doc Lets a group (gid or name) open the device without CAP_NET_ADMIN.
-spec group(dev(), integer() | string() | binary()) -> ok | {error, term()}.
group(Dev, Group) ->
    tunctl:group(Dev, Group).

%%--------------------------------------------------------------------
%% Configuration (rtnetlink, where the device lives)
%%--------------------------------------------------------------------

%% @doc Adds an address (/32 for IPv4, /64 for IPv6, or `"ADDR/N"') and brings the device
%% up. Strings are parsed strictly (`"10.1"' and octal forms are `{error, einval}').
-spec up(dev(), tunctl:address()) -> ok | {error, term()}.
up(Dev, Addr) ->
    tunctl:up(Dev, Addr).

%% @doc Adds `Addr/Mask' and brings the device up (0 to 32 for IPv4, 0 to 128 for IPv6).
-spec up(dev(), tunctl:address(), 0..128) -> ok | {error, term()}.
up(Dev, Addr, Mask) ->
    tunctl:up(Dev, Addr, Mask).

%% @doc Sets the point-to-point peer (IPv4 or IPv6) of the device's address.
-spec dstaddr(dev(), tunctl:address()) -> ok | {error, term()}.
dstaddr(Dev, Addr) ->
    tunctl:dstaddr(Dev, Addr).

%% @doc Sets the broadcast address of the device's IPv4 address.
-spec broadcast(dev(), tunctl:address()) -> ok | {error, term()}.
broadcast(Dev, Addr) ->
    tunctl:broadcast(Dev, Addr).

%% @doc Brings the device down; addresses stay.
-spec down(dev()) -> ok | {error, term()}.
down(Dev) ->
    tunctl:down(Dev).

%% @doc The MTU: `{ok, MTU}'.
-spec mtu(dev()) -> {ok, integer()} | {error, term()}.
mtu(Dev) ->
    tunctl:mtu(Dev).

%% @doc Sets the MTU; returns `{ok, FD, Name}' as the original did.
-spec mtu(dev(), integer()) -> {ok, integer(), binary()} | {error, term()}.
mtu(Dev, MTU) when is_integer(MTU) ->
    case tunctl_nif:set_mtu(Dev, MTU) of
        ok -> {ok, getfd(Dev), devname(Dev)};
        Error -> Error
    end;
mtu(_, _) ->
    {error, einval}.

%% @doc The device's addresses.
-spec addresses(dev()) -> {ok, [{inet:ip_address(), 0..128}]} | {error, term()}.
addresses(Dev) ->
    tunctl:addresses(Dev).

%% @doc Removes an address.
-spec del_address(dev(), tunctl:address()) -> ok | {error, term()}.
del_address(Dev, Addr) ->
    tunctl:del_address(Dev, Addr).

%%--------------------------------------------------------------------
%% Packets
%%--------------------------------------------------------------------

%% @doc A packet from the fd `FD' ({@link getfd/1}), if one is queued; `{error, eagain}' if
%% not.
-spec read(integer()) -> {ok, binary()} | {error, term()}.
read(FD) ->
    read(FD, ?MAXLEN).

%% @doc At most `Len' bytes of the next packet (the rest of a longer one is dropped, as in
%% the original), from the fd `FD'. Works in active mode too, racing with delivery, as the
%% original's did.
-spec read(integer(), non_neg_integer()) -> {ok, binary()} | {error, term()}.
read(FD, Len) when is_integer(Len), Len >= 0 ->
    tunctl_nif:read(FD, min(Len, 16#FFFFFF));
read(_, _) ->
    {error, einval}.

%% @doc Writes one packet to the fd `FD'.
-spec write(integer(), iodata()) -> ok | {error, term()}.
write(FD, Data) ->
    send(FD, Data).

%% @doc Writes one packet: `ok', `{error, eagain}' if the device cannot take it now, the
%% kernel's refusal (`einval' for a malformed packet), or `{error, ebadf}' once destroyed.
-spec send(dev(), iodata()) -> ok | {error, term()}.
send(Dev, Data) when is_binary(Data) ->
    tunctl_nif:send(Dev, Data);
send(Dev, Data) ->
    try iolist_to_binary(Data) of
        Bin -> tunctl_nif:send(Dev, Bin)
    catch
        error:badarg -> {error, einval}
    end.

%% @doc The next packet if one is queued: `{error, eagain}' if none is, `{error, einval}' in
%% active mode (as in the original).
-spec recv(dev()) -> {ok, binary()} | {error, term()}.
recv(Dev) ->
    recv(Dev, ?MAXLEN).

%% @doc At most `Len' bytes of the next packet if one is queued.
-spec recv(dev(), non_neg_integer()) -> {ok, binary()} | {error, term()}.
recv(Dev, Len) when is_integer(Len), Len >= 0 ->
    raw_recv(Dev, Len);
recv(_, _) ->
    {error, einval}.

%% @doc At most `Len' bytes of the next packet, waiting up to `Timeout' milliseconds (or
%% `infinity') for one: `{error, timeout}' if none came. The wait is a message to the
%% caller, not a busy loop, and holds no scheduler.
-spec recv(dev(), non_neg_integer(), timeout()) -> {ok, binary()} | {error, term()}.
recv(Dev, Len, Timeout) when
    is_integer(Len), Len >= 0, Timeout =:= infinity orelse (is_integer(Timeout) andalso Timeout >= 0)
->
    case raw_recv(Dev, Len) of
        {error, eagain} when Timeout =:= 0 -> {error, timeout};
        {error, eagain} -> call(Dev, {recv, Len, Timeout});
        Other -> Other
    end;
recv(_, _, _) ->
    {error, einval}.

raw_recv(Dev, Len) ->
    tunctl_nif:recv(Dev, min(Len, 16#FFFFFF)).

%% @doc Decodes the packet-information header; see {@link tunctl:header/1}.
-spec header(binary()) -> {tun_pi, tunctl:uint16_t(), tunctl:uint16_t(), binary()}.
header(Packet) ->
    tunctl:header(Packet).

%%--------------------------------------------------------------------
%% Active mode and ownership
%%--------------------------------------------------------------------

%% @doc Sets `{active, true | false | once | N}'. `N' is added to what is left of a count,
%% as for sockets; a count of 0 or less means passive and sends `{tuntap_passive, Dev}'.
%% Any other option is `{error, badarg}', as in the original.
-spec setopt(dev(), {active, active()}) -> ok | {error, term()}.
setopt(Dev, {active, _} = Opt) ->
    call(Dev, {setopt, Opt});
setopt(_, _) ->
    {error, badarg}.

%% @doc Makes `Pid' the owner: it receives the packets (those already delivered to the
%% caller move along, in order) and its exit destroys the device. Only the owner may call
%% it: `{error, not_owner}' for anyone else.
-spec controlling_process(dev(), pid()) -> ok | {error, term()}.
controlling_process(Dev, Pid) when is_pid(Dev), is_pid(Pid) ->
    case call(Dev, {controlling_process, Pid}) of
        {ok, keep} ->
            ok;
        {ok, Mode} ->
            forward(Dev, Pid),
            call(Dev, {resume, Mode});
        Other ->
            Other
    end;
controlling_process(_, _) ->
    {error, badarg}.

forward(Dev, Pid) ->
    receive
        {tuntap, Dev, _} = M ->
            Pid ! M,
            forward(Dev, Pid);
        {tuntap_passive, Dev} = M ->
            Pid ! M,
            forward(Dev, Pid);
        {tuntap_error, Dev, _} = M ->
            Pid ! M,
            forward(Dev, Pid)
    after 0 -> ok
    end.

call(Dev, Request) ->
    try
        gen_server:call(Dev, Request, infinity)
    catch
        exit:{noproc, _} -> {error, ebadf};
        exit:{normal, _} -> {error, ebadf};
        exit:{shutdown, _} -> {error, ebadf};
        exit:{{shutdown, _}, _} -> {error, ebadf}
    end.

%%--------------------------------------------------------------------
%% The device's process
%%--------------------------------------------------------------------

%% @private
init({Handle, Active, Owner}) ->
    process_flag(trap_exit, true),
    true = tunctl_nif:bind(Handle, self()),
    State = #state{handle = Handle, owner = Owner},
    case activate(Active, State) of
        ok ->
            {ok, State};
        {error, _} ->
            % The reader thread could not start. `ignore', not `{stop, Reason}': the
            % caller is linked and must not get an exit signal (create/2 says eagain).
            ignore
    end.

%% @private
handle_call(destroy, _From, #state{handle = H} = State) ->
    Reply = tunctl_nif:close(H),
    {stop, normal, Reply, fail_waiters(ebadf, State#state{handle = closed})};
handle_call({setopt, {active, A}}, _From, #state{handle = H, owner = Owner} = State) ->
    Reply =
        case active(A) of
            {ok, N} when is_integer(N) ->
                % Added to what is left, atomically with delivery (in the NIF).
                case tunctl_nif:add_active(H, N, Owner) of
                    passive ->
                        Owner ! {tuntap_passive, self()},
                        ok;
                    Other ->
                        Other
                end;
            {ok, Mode} ->
                activate(Mode, State);
            error ->
                {error, badarg}
        end,
    {reply, Reply, rearm(State)};
handle_call({controlling_process, Owner}, {Owner, _}, #state{owner = Owner} = State) ->
    {reply, {ok, keep}, State};
handle_call({controlling_process, Pid}, {From, _}, #state{owner = From, handle = H} = State) ->
    Mode = tunctl_nif:active(H),
    _ = tunctl_nif:set_active(H, false, From),
    link(Pid),
    unlink(From),
    {reply, {ok, Mode}, State#state{owner = Pid}};
handle_call({controlling_process, _}, _From, State) ->
    {reply, {error, not_owner}, State};
handle_call({resume, keep}, _From, State) ->
    {reply, ok, State};
handle_call({resume, Mode}, _From, State) ->
    {reply, activate(Mode, State), rearm(State)};
handle_call({recv, Len, Timeout}, From, #state{handle = H} = State) ->
    case tunctl_nif:recv(H, Len) of
        {error, eagain} ->
            Timer =
                case Timeout of
                    infinity -> infinity;
                    _ -> erlang:start_timer(Timeout, self(), recv_timeout)
                end,
            Waiters = State#state.waiters ++ [{From, Len, Timer}],
            {noreply, arm(State#state{waiters = Waiters})};
        Reply ->
            {reply, Reply, State}
    end;
handle_call(_Request, _From, State) ->
    {reply, {error, einval}, State}.

%% @private
handle_cast(_Msg, State) ->
    {noreply, State}.

%% @private
handle_info({'EXIT', Owner, _Reason}, #state{owner = Owner} = State) ->
    % The owner went: so does the device (terminate closes it).
    {stop, normal, State};
handle_info({'EXIT', _, _}, State) ->
    {noreply, State};
handle_info({'$tuncer', readable}, State) ->
    {noreply, serve(State#state{notified = false})};
handle_info({'$tuncer', gone, Reason}, State) ->
    {stop, normal, fail_waiters(Reason, State)};
handle_info({timeout, Timer, recv_timeout}, #state{waiters = Waiters} = State) ->
    case lists:keytake(Timer, 3, Waiters) of
        {value, {From, _, _}, Rest} ->
            gen_server:reply(From, {error, timeout}),
            {noreply, State#state{waiters = Rest}};
        false ->
            {noreply, State}
    end;
handle_info(_Info, State) ->
    {noreply, State}.

%% @private
terminate(_Reason, #state{handle = closed}) ->
    ok;
terminate(_Reason, #state{handle = H} = State) ->
    _ = fail_waiters(ebadf, State),
    _ = tunctl_nif:close(H),
    ok.

%% @private
code_change(_OldVsn, State, _Extra) ->
    {ok, State}.

%%--------------------------------------------------------------------
%% Internal
%%--------------------------------------------------------------------

active(A) -> tunctl:active_mode(A).

activate(N, #state{handle = H, owner = Owner}) when is_integer(N), N =< 0 ->
    case tunctl_nif:set_active(H, false, Owner) of
        ok ->
            Owner ! {tuntap_passive, self()},
            ok;
        Error ->
            Error
    end;
activate(N, _) when is_integer(N), N > 32767 ->
    {error, einval};
activate(Mode, #state{handle = H, owner = Owner}) ->
    tunctl_nif:set_active(H, Mode, Owner).

%% Waiting receivers get a packet each while packets are queued; the rest wait for the next.
serve(#state{waiters = []} = State) ->
    State;
serve(#state{waiters = [{From, Len, Timer} | Rest], handle = H} = State) ->
    case tunctl_nif:recv(H, Len) of
        {error, eagain} ->
            arm(State);
        Reply ->
            cancel(Timer),
            gen_server:reply(From, Reply),
            serve(State#state{waiters = Rest})
    end.

arm(#state{notified = true} = State) ->
    State;
arm(#state{handle = H} = State) ->
    case tunctl_nif:notify(H, self()) of
        ok -> State#state{notified = true};
        {error, Reason} -> fail_waiters(Reason, State)
    end.

%% After a mode change: receivers waiting in recv/3 fail in active mode, and wait on (the
%% reader's notice was replaced by the mode change) in passive mode.
rearm(#state{waiters = []} = State) ->
    State#state{notified = false};
rearm(#state{handle = H} = State) ->
    case tunctl_nif:active(H) of
        false -> serve(State#state{notified = false});
        _ -> fail_waiters(einval, State)
    end.

fail_waiters(Reason, #state{waiters = Waiters} = State) ->
    [
        begin
            cancel(Timer),
            gen_server:reply(From, {error, Reason})
        end
     || {From, _, Timer} <- Waiters
    ],
    State#state{waiters = [], notified = false}.

cancel(infinity) -> ok;
cancel(Timer) -> _ = erlang:cancel_timer(Timer), ok.
