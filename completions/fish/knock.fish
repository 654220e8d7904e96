complete -c knock -l totp -d 'Knock a rotating (TOTP) door: send the current time step\'s sequence derived from the secret FILE made by `knockd --new-totp` (instead of PORT arguments). The clocks of client and server may differ by up to one step' -r -F
complete -c knock -s d -l delay -d 'Wait MS milliseconds between knocks (not after the last one)' -r
complete -c knock -s u -l udp -d 'Use UDP for ports given without a protocol (an explicit :tcp still means TCP)'
complete -c knock -s 4 -l ipv4 -d 'Use IPv4 only: knock an IPv4 address of HOST'
complete -c knock -s 6 -l ipv6 -d 'Use IPv6 only: knock an IPv6 address of HOST'
complete -c knock -s v -l verbose -d 'Print each knock as it is sent ("hitting tcp 10.0.0.1:7000"); with --totp, first the step, its UTC time window, the ports and the address knocked'
complete -c knock -s h -l help -d 'Print help (see more with \'--help\')'
complete -c knock -s V -l version -d 'Print version'
