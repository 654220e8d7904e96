# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_knockctl_global_optspecs
    string join \n socket= json H/host= hosts= hosts-file= ssh-persist= timeout= h/help V/version
end

function __fish_knockctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_knockctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_knockctl_using_subcommand
    set -l cmd (__fish_knockctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c knockctl -n "__fish_knockctl_needs_command" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_needs_command" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_needs_command" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_needs_command" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_needs_command" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_needs_command" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_needs_command" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c knockctl -n "__fish_knockctl_needs_command" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "status" -d 'Show version, pid, uptime, interfaces, config file, doors and counters'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "list" -d 'List open grants (addresses let in, and until when); knockd lists the oldest 5000 and knockctl says how many more there are (on stderr with --json)'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "grants" -d 'List open grants (addresses let in, and until when); knockd lists the oldest 5000 and knockctl says how many more there are (on stderr with --json)'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "attempts" -d 'List knock sequences in progress (the oldest 5000, and how many more there are)'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "doors" -d 'List configured doors: sequence (root only; others see kind and number of knocks), timeout, action (TOTP doors: step and when the next begins)'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "revoke" -d 'Close the open grants of ADDRESS (only those of one door with --door)'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "reload" -d 'Re-read the configuration file (errors are printed with their file:line)'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "tail" -d 'Print events as they happen, one per line, until knockd closes the connection'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "tui" -d 'Live dashboard: attempts, grants, events, doors (`?` shows the keys). Over many hosts (-H, --hosts): a HOST column and a header line per host'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "metrics" -d 'Print counters and gauges in the Prometheus text format (for node_exporter\'s textfile collector; knockd opens no TCP port)'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "clients" -d 'List the enrolled SPA clients (name, fingerprint, doors, last seen, open grants), or revoke one (refused from its next packet; no restart)'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "dial-stdio" -d 'Relay stdin and stdout to the control socket, unchanged, until either side closes: the remote end of `knockctl -H ssh://...` (knockctl runs it over ssh)'
complete -c knockctl -n "__fish_knockctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c knockctl -n "__fish_knockctl_using_subcommand status" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand status" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand status" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand status" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand status" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand status" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand status" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand status" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand list" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand list" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand list" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand list" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand list" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand list" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand list" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand list" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand list" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand grants" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand grants" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand grants" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand grants" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand grants" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand grants" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand grants" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand grants" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand grants" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand attempts" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand attempts" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand attempts" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand attempts" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand attempts" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand attempts" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand attempts" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand attempts" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand attempts" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand doors" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand doors" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand doors" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand doors" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand doors" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand doors" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand doors" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand doors" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand doors" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -l door -d 'Only close the grant of this door' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -l on -d 'With many hosts: only on this host (by default, on every host that has a grant for ADDRESS)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand revoke" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand reload" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand reload" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand reload" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand reload" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand reload" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand reload" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand reload" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand reload" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand reload" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand tail" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand tail" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand tail" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand tail" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand tail" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand tail" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand tail" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand tail" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand tail" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand tui" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand tui" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand tui" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand tui" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand tui" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand tui" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand tui" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand tui" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand tui" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand metrics" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand metrics" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand metrics" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand metrics" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand metrics" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand metrics" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand metrics" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand metrics" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c knockctl -n "__fish_knockctl_using_subcommand metrics" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -f -a "revoke" -d 'Revoke client NAME: its next packet is refused, and its record file in SPA_ClientDir is renamed NAME.pub.revoked so that a restart keeps it revoked'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and not __fish_seen_subcommand_from revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -l close -d 'Also close the grants its packets opened'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from revoke" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Revoke client NAME: its next packet is refused, and its record file in SPA_ClientDir is renamed NAME.pub.revoked so that a restart keeps it revoked'
complete -c knockctl -n "__fish_knockctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c knockctl -n "__fish_knockctl_using_subcommand dial-stdio" -l socket -d 'Control socket of knockd' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand dial-stdio" -s H -l host -d 'A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path] (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand dial-stdio" -l hosts -d 'Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host)' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand dial-stdio" -l hosts-file -d 'The hosts file [default: ~/.config/knockctl/hosts.toml]' -r -F
complete -c knockctl -n "__fish_knockctl_using_subcommand dial-stdio" -l ssh-persist -d 'Share one ssh connection per host (ssh\'s ControlMaster), kept SECS after its last command, so later commands skip the login (0: no sharing; default: the hosts file\'s [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or ControlPath: ssh\'s own settings win' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand dial-stdio" -l timeout -d 'Seconds each host gets to connect and answer; a host that takes longer is reported and the others\' answers are printed' -r
complete -c knockctl -n "__fish_knockctl_using_subcommand dial-stdio" -l json -d 'Machine-readable output: one JSON document (tail: one JSON object per line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand dial-stdio" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c knockctl -n "__fish_knockctl_using_subcommand dial-stdio" -s V -l version -d 'Print version'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "status" -d 'Show version, pid, uptime, interfaces, config file, doors and counters'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "list" -d 'List open grants (addresses let in, and until when); knockd lists the oldest 5000 and knockctl says how many more there are (on stderr with --json)'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "attempts" -d 'List knock sequences in progress (the oldest 5000, and how many more there are)'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "doors" -d 'List configured doors: sequence (root only; others see kind and number of knocks), timeout, action (TOTP doors: step and when the next begins)'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "revoke" -d 'Close the open grants of ADDRESS (only those of one door with --door)'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "reload" -d 'Re-read the configuration file (errors are printed with their file:line)'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "tail" -d 'Print events as they happen, one per line, until knockd closes the connection'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "tui" -d 'Live dashboard: attempts, grants, events, doors (`?` shows the keys). Over many hosts (-H, --hosts): a HOST column and a header line per host'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "metrics" -d 'Print counters and gauges in the Prometheus text format (for node_exporter\'s textfile collector; knockd opens no TCP port)'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "clients" -d 'List the enrolled SPA clients (name, fingerprint, doors, last seen, open grants), or revoke one (refused from its next packet; no restart)'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "dial-stdio" -d 'Relay stdin and stdout to the control socket, unchanged, until either side closes: the remote end of `knockctl -H ssh://...` (knockctl runs it over ssh)'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and not __fish_seen_subcommand_from status list attempts doors revoke reload tail tui metrics clients dial-stdio help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c knockctl -n "__fish_knockctl_using_subcommand help; and __fish_seen_subcommand_from clients" -f -a "revoke" -d 'Revoke client NAME: its next packet is refused, and its record file in SPA_ClientDir is renamed NAME.pub.revoked so that a restart keeps it revoked'
