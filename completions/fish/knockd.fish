complete -c knockd -s i -l interface -d 'Interface to listen on (overrides Interface in the config; `any` for all)' -r
complete -c knockd -s c -l config -d 'Config file' -r -F
complete -c knockd -s p -l pidfile -d 'Pidfile (overrides PidFile in the config) [default: /var/run/knockd.pid with -d]' -r -F
complete -c knockd -s g -l logfile -d 'Log file (overrides LogFile in the config)' -r -F
complete -c knockd -l new-totp -d 'Write a fresh TOTP door secret to FILE (mode 0600; never overwrites) and exit. Name it in a door with `TOTP_File = FILE` and copy it to clients for `knock --totp FILE HOST`' -r -F
complete -c knockd -l new-client -d 'Enroll an SPA client NAME: write its public record to SPA_ClientDir (from -c, default /etc/knockd/clients/NAME.pub) and its secret key file to --out (mode 0600; give it to the client for `knock --spa FILE HOST`); the first one also makes SPA_ServerKey. Exit' -r
complete -c knockd -l out -d 'Where --new-client writes the client\'s secret key file (never overwritten)' -r -F
complete -c knockd -l socket -d 'Control socket for knockctl (overrides Socket in the config) [default: /run/knockd/knockd.sock]' -r -F
complete -c knockd -l state-file -d 'Where the grant ledger is kept across restarts (overrides StateFile in the config) [default: /var/lib/knockd/state.json]' -r -F
complete -c knockd -l firewall -d 'Firewall backend of native doors (`Open =`), overriding Firewall in the config: iptables (rules in INPUT) or nftables (kernel-expiring elements in table inet knockd) [default: iptables]' -r -f -a "iptables\t''
nftables\t''"
complete -c knockd -s d -l daemon -d 'Detach and run in the background (writes the pidfile)'
complete -c knockd -s D -l debug -d 'Debug output on stderr (per-packet detail)'
complete -c knockd -s v -l verbose -d 'Verbose output on stderr'
complete -c knockd -s l -l lookup -d 'Accepted for knockd compatibility and ignored: reverse DNS of knockers would let any packet trigger lookups and leak knocks to DNS observers'
complete -c knockd -s 4 -l only-ip-v4 -d 'Ignore IPv6 addresses and packets'
complete -c knockd -s t -l check-config -d 'Check the config file, print problems and warnings (the summary counts every one), and exit (0 = valid); the capture filter is compiled for the interface\'s link type. With knockd\'s privileges (root) a missing interface is an error; without them, the checks that need them are skipped and named ("not checked: ..."). With SPA doors it checks the server key, every client record and every door\'s SPA list (errors: exit 1)'
complete -c knockd -l firewall-cleanup -d 'Remove knockd\'s nftables table (inet knockd, or NftTable of the config: its grants and the protection of the doors\' ports) and its SPA port DROP rules in iptables and ip6tables INPUT (knockd@TAG:spa-drop, left by a kill -9), and exit; other tables and rules are not touched. Refused while the knockd that owns them runs (it would re-create the table within a second), and when another knockd\'s state file owns the table'
complete -c knockd -l force -d 'With --firewall-cleanup: remove the table when another knockd, stopped, owns it (never while its owner runs)'
complete -c knockd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c knockd -s V -l version -d 'Print version'
