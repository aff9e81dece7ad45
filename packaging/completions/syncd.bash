# bash completion for syncd
# tests/cli/test_packaging.py checks that it offers every command and option of `syncd`.

_syncd_commands="init cluster-key id peer mount umount serve status pending log pin unpin fetch
conflicts import wait config ui versions restore mode revert
override relay"
# Options that take a value (the next word is that value).
_syncd_valued="--home --name --listen --cluster-key --cluster-key-file --into --peer --copies
--timeout --since --address --fingerprint --at --to --seconds --credentials"

# Sets the options of command $1 (besides --home and --help) and the kind of its
# positional arguments; $2 is its first positional argument, if any.
_syncd_command_args()
{
    case $1 in
        init) opts="--name --listen --cluster-key --cluster-key-file" ;;
        cluster-key) opts="--rotate" ;;
        peer)
            case $2 in
                '') args=words words="add discover list remove set" ;;
                add) opts="--fingerprint" ;;
                discover) opts="--json --seconds" ;;
                list) opts="--json" ;;
                set) opts="--address" ;;
            esac
            ;;
        relay)
            case $2 in
                '') args=words words="add list remove" ;;
                add) opts="--credentials" ;;
                list) opts="--json" ;;
            esac
            ;;
        mount) opts="--foreground --allow-other --debug-fuse" args=dirs ;;
        serve) opts="--mirror" ;;
        status | pending | conflicts | id) opts="--json" ;;
        log) opts="--peer --since --json" ;;
        pin | unpin | fetch) args=files ;;
        import) opts="--into" args=dirs ;;
        wait) opts="--peer --copies --timeout" ;;
        ui) opts="--metrics" ;;
        versions) opts="--json" args=files ;;
        restore) opts="--at --to" args=files ;;
        mode) [[ -z $2 ]] && args=words words="send-receive receive-only send-only" ;;
        revert | override) args=files ;;
        config)
            opts="--json"
            case $2 in
                '') args=words words="get set" ;;
                get | set) args=words words="name listen attr_timeout prefetch_below log_keep_days
                    ui_listen versions_keep_days versions_max cache_limit min_copies discovery mode
                    relay_member_days tombstone_keep_days" ;;
            esac
            ;;
    esac
}

_syncd()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmd='' first='' opts='' args='' words='' i
    # `--home=DIR` is split into `--home`, `=`, `DIR`
    [[ $prev == = ]] && prev=${COMP_WORDS[COMP_CWORD-2]}
    [[ $cur == = ]] && cur=''

    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            =) ((i++)) ;;
            -*)
                if [[ " ${_syncd_valued//$'\n'/ } " == *" ${COMP_WORDS[i]} "* ]]; then
                    [[ ${COMP_WORDS[i+1]} == = ]] || ((i++))
                fi
                ;;
            *)
                if [[ -z $cmd ]]; then
                    cmd=${COMP_WORDS[i]}
                elif [[ -z $first ]]; then
                    first=${COMP_WORDS[i]}
                fi
                ;;
        esac
    done

    case $prev in
        --home) args=dirs ;;
        --name | --listen | --cluster-key | --peer | --copies | --timeout | --into | --since | \
            --address | --fingerprint | --at | --seconds) return ;;
        --to) args=files ;;
        --cluster-key-file | --credentials) args=files ;;
        *)
            if [[ -z $cmd ]]; then
                args=commands
            else
                _syncd_command_args "$cmd" "$first"
            fi
            [[ $cur == -* ]] && args=options
            ;;
    esac

    case $args in
        commands) mapfile -t COMPREPLY < <(compgen -W "$_syncd_commands" -- "$cur") ;;
        words) mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur") ;;
        options) mapfile -t COMPREPLY < <(compgen -W "--home --help $opts" -- "$cur") ;;
        dirs)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -d -- "$cur")
            ;;
        files)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            ;;
    esac
}

complete -F _syncd syncd
