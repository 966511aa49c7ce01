%% @private
%% @doc The NIF (crates/tunctl-erl, priv/libtunctl_erl.so). Use tuncer, tunctl and
%% tunctl_offload instead: they check arguments; these functions raise badarg on bad ones.
-module(tunctl_nif).

-export([
    create/2,
    attach_queue/1,
    close/1,
    bind/2,
    name/1,
    getfd/1,
    recv/2,
    read/2,
    send/2,
    set_active/3,
    add_active/3,
    active/1,
    notify/2,
    persist/2,
    owner/2,
    group/2,
    user_id/1,
    group_id/1,
    flags/1,
    offload/1,
    up/3,
    down/1,
    dstaddr/2,
    broadcast/2,
    mtu/1,
    set_mtu/2,
    addresses/1,
    del_address/3,
    gso_split/1,
    gro_coalesce/2
]).

-on_load(init/0).

init() ->
    Dir =
        case code:priv_dir(tunctl) of
            {error, bad_name} ->
                filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
            D ->
                D
        end,
    erlang:load_nif(filename:join(Dir, "libtunctl_erl"), 0).

-define(NIF, erlang:nif_error({not_loaded, ?MODULE})).

create(_Name, _Options) -> ?NIF.
attach_queue(_Dev) -> ?NIF.
close(_Handle) -> ?NIF.
bind(_Handle, _Pid) -> ?NIF.
name(_Dev) -> ?NIF.
getfd(_Dev) -> ?NIF.
recv(_Dev, _Len) -> ?NIF.
read(_Dev, _Len) -> ?NIF.
send(_Dev, _Packet) -> ?NIF.
set_active(_Dev, _Mode, _Owner) -> ?NIF.
add_active(_Dev, _N, _Owner) -> ?NIF.
active(_Dev) -> ?NIF.
notify(_Dev, _Pid) -> ?NIF.
persist(_Dev, _Bool) -> ?NIF.
owner(_Dev, _Uid) -> ?NIF.
group(_Dev, _Gid) -> ?NIF.
user_id(_User) -> ?NIF.
group_id(_Group) -> ?NIF.
flags(_Dev) -> ?NIF.
offload(_Dev) -> ?NIF.
up(_Dev, _Addr, _Prefix) -> ?NIF.
down(_Dev) -> ?NIF.
dstaddr(_Dev, _Addr) -> ?NIF.
broadcast(_Dev, _Addr) -> ?NIF.
mtu(_Dev) -> ?NIF.
set_mtu(_Dev, _Mtu) -> ?NIF.
addresses(_Dev) -> ?NIF.
del_address(_Dev, _Addr, _Prefix) -> ?NIF.
gso_split(_Packet) -> ?NIF.
gro_coalesce(_Packets, _Udp) -> ?NIF.
