# bash completion for syncd

_syncd_commands="init mount umount status"

# Sets the options of command $1 (besides --home and --help) and the kind of its
# positional arguments.
_syncd_command_args()
{
    case $1 in
        init) opts="--name --listen" ;;
        mount) opts="--foreground --allow-other --debug-fuse" args=dirs ;;
        status) opts="--json" ;;
    esac
}

_syncd()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmd='' opts='' args='' i
    # `--home=DIR` is split into `--home`, `=`, `DIR`
    [[ $prev == = ]] && prev=${COMP_WORDS[COMP_CWORD-2]}
    [[ $cur == = ]] && cur=''

    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --home | --name | --listen) [[ ${COMP_WORDS[i+1]} == = ]] || ((i++)) ;;
            =) ((i++)) ;;
            -*) ;;
            *) cmd=${COMP_WORDS[i]}; break ;;
        esac
    done

    case $prev in
        --home) args=dirs ;;
        --name | --listen) return ;;
        *)
            if [[ -z $cmd ]]; then
                args=commands
            else
                _syncd_command_args "$cmd"
            fi
            [[ $cur == -* ]] && args=options
            ;;
    esac

    case $args in
        commands) mapfile -t COMPREPLY < <(compgen -W "$_syncd_commands" -- "$cur") ;;
        options) mapfile -t COMPREPLY < <(compgen -W "--home --help $opts" -- "$cur") ;;
        dirs)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -d -- "$cur")
            ;;
    esac
}

complete -F _syncd syncd
