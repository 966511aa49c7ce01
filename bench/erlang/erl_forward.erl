%% The `erlang' bench group's forwarder, written once against the tuncer API (the Erlang
%% original's, which ours keeps): two tun devices, each in a namespace of its own, in active
%% mode; every packet read from one is sent out of the other. The harness runs it on the
%% original (erl-original) and on ours (erl-tunctl, erl-tunctl-offload), unchanged.
%%
%%   erl -noshell -pa EBIN... -s erl_forward main NS_A DEV_A NS_B DEV_B [offload]
%%
%% NS is a namespace path (/var/run/netns/NAME), as the original's {namespace, Path} takes.
%% `offload' asks for TSO on devices the harness made with vnet_hdr (ours only): the
%% super-packets cross whole, header and all.
-module(erl_forward).
-export([main/1]).

main([NsA, DevA, NsB, DevB | Rest]) ->
    Extra =
        case Rest of
            [offload] -> [vnet_hdr, {offload, [csum, tso4, tso6]}];
            [] -> []
        end,
    {ok, A} = open(NsA, DevA, Extra),
    {ok, B} = open(NsB, DevB, Extra),
    io:format("ready~n"),
    loop(A, B).

open(Ns, Dev, Extra) ->
    tuncer:create(atom_to_list(Dev), [tun, no_pi, {active, true},
        {namespace, atom_to_list(Ns)} | Extra]).

loop(A, B) ->
    receive
        {tuntap, A, Packet} ->
            _ = tuncer:send(B, Packet),
            loop(A, B);
        {tuntap, B, Packet} ->
            _ = tuncer:send(A, Packet),
            loop(A, B);
        Other ->
            io:format(standard_error, "erl_forward: ~p~n", [Other]),
            halt(1)
    end.
