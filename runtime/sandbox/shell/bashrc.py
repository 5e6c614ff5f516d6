"""The mediated shell's rc file as a template (bash in a raw string); @DIR@ becomes the folder it is written to."""

BASHRC = r"""# The mediated shell of an Aileron sandbox, written by `aileron launch` (runtime/sandbox/shell).
#
# Every bash in the sandbox reads this file: interactive ones through --rcfile or /etc/bash.bashrc, and
# non-interactive ones (the agent's `bash -c` commands, scripts) through BASH_ENV, which it pins read-only.
# Before each simple command bash runs the DEBUG trap set below; it checks the command line ($BASH_COMMAND)
# against the organization's shell policy (@DIR@/policy.sh) and the guard that protects the trap itself, then
# lets the command run or refuses it. Refusals, and every command if the policy says so, are reported to the
# audit log through the Aileron proxy.
#
# This stops commands that bash runs. It cannot stop a program that starts another program without bash
# (python -c, a compiled binary, /bin/sh, `env -i`): the boundary is the sandbox and the proxy (see README).
#
# The check is written to hold when the agent has defined functions named like builtins: the verdict is reached
# with keywords, assignments and expansions only, never by calling a command; output and exit happen after
# `builtin` has been freed from any function of that name (POSIX mode, switched on by an assignment, makes the
# special builtin `unset` win over functions).

if [[ -z ${__aileron_loaded+set} || ${__aileron_loaded@a} != *r* ]]; then

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
    POSIXLY_CORRECT=y
    unset -f builtin
    builtin printf 'aileron: the mediated shell needs bash 4.4 or later, not %s; refusing\n' "$BASH_VERSION" >&2
    exit 126
fi

# 1. Functions (perhaps from the environment) may not stand in for the builtins used below.
if [[ :$SHELLOPTS: == *:posix:* ]]; then
    unset -f builtin command printf read shopt set trap declare readonly exit return unset source . eval exec
else
    POSIXLY_CORRECT=y
    unset -f builtin command printf read shopt set trap declare readonly exit return unset source . eval exec
    unset POSIXLY_CORRECT
fi

# 2. The organization's policy, as written at launch; without it every command is refused.
__aileron_mode=enforce
__aileron_record_allowed=0
__aileron_session=
__aileron_deny=()
__aileron_allow=()
__aileron_broken=
if [[ ! -r "@DIR@/policy.sh" ]] || ! builtin source "@DIR@/policy.sh"; then
    __aileron_broken="the shell policy (@DIR@/policy.sh) cannot be read"
fi
builtin declare -gr __aileron_mode __aileron_record_allowed __aileron_session __aileron_broken
builtin declare -gra __aileron_deny __aileron_allow

# 3. Where reports go: the proxy named by HTTPS_PROXY, with the session token (AILERON_TOKEN or the proxy URL's).
__aileron_url=${HTTPS_PROXY:-${https_proxy:-}}
__aileron_url=${__aileron_url#*://}
__aileron_token=${AILERON_TOKEN:-}
if [[ $__aileron_url == *@* ]]; then
    [[ -n $__aileron_token ]] || __aileron_token=${__aileron_url%@*}
    __aileron_token=${__aileron_token#*:}
    __aileron_url=${__aileron_url##*@}
fi
__aileron_url=${__aileron_url%%/*}
__aileron_proxy_host=
__aileron_proxy_port=
__aileron_re=$'^\\[([0-9A-Fa-f:.]+)\\]:([0-9]+)$'
if [[ $__aileron_url =~ $__aileron_re ]] || [[ $__aileron_url =~ ^([^:]+):([0-9]+)$ ]]; then
    __aileron_proxy_host=${BASH_REMATCH[1]}
    __aileron_proxy_port=${BASH_REMATCH[2]}
fi
builtin declare -gr __aileron_proxy_host __aileron_proxy_port __aileron_token
builtin unset __aileron_url __aileron_re

# 4. Patterns the check uses (read-only, like everything above).
# A leading NAME=value assignment, or a wrapper that runs the next word as the command.
builtin declare -gr __aileron_assign_re=$'^[A-Za-z_][A-Za-z0-9_]*(\\[[^]]*\\])?\\+?='\
$'([^[:space:]"\'\\\\]|\\\\.|"([^"\\\\]|\\\\.)*"|\'[^\']*\')*([[:space:]]+|$)'
builtin declare -gr __aileron_wrapper_re=$'^(command|builtin|exec|nohup|env)'\
$'(([[:space:]]+-[^[:space:]]*)|([[:space:]]+[A-Za-z_][A-Za-z0-9_]*=[^[:space:]]*))*([[:space:]]+|$)'
builtin declare -gr __aileron_env_re=$'^env[[:space:]](.*[[:space:]])?'\
$'(-[A-Za-z]*[iuS][A-Za-z]*|-|--ignore-environment|--unset|--split-string)([[:space:]=]|$)'
builtin declare -gr __aileron_execa_re=$'^exec[[:space:]](.*[[:space:]])?-[A-Za-z]*a'
# One shell word, quoted or not.
builtin declare -gr __aileron_word_re=$'^[[:space:]]*(([^[:space:]"\'\\\\]|\\\\.|"([^"\\\\]|\\\\.)*"|\'[^\']*\')+)'
# `set` switching off what the trap relies on.
builtin declare -gr __aileron_set_re=$'(^|[[:space:]])(\\+[A-Za-z]*T|[-+]o?[[:space:]]*[$`]|'\
$'[-+]o[[:space:]]+(functrace|posix))|--posix|functrace'
builtin declare -gr __aileron_attr_re=$'(^|[[:space:]])[-+][A-Za-z]*[nirlAau]'
builtin declare -gr __aileron_dynname_re=$'(^|[[:space:]])([$`]|[^-+=[:space:]][^=[:space:]]*[$`*?[{])'
# A nameref may only name a variable literally: one bound at run time could lend any attribute to any variable.
builtin declare -gr __aileron_nopt_re=$'(^|[[:space:]])-[A-Za-z]*n'
builtin declare -gr __aileron_nameref_re=$'^(declare|typeset|local)([[:space:]]+-[A-Za-z]+)*'\
$'([[:space:]]+[A-Za-z_][A-Za-z0-9_]*=[A-Za-z_][A-Za-z0-9_]*)+$'
builtin declare -gr __aileron_fopt_re=$'(^|[[:space:]])-[A-Za-z]*f' __aileron_ropt_re=$'(^|[[:space:]])-[A-Za-z]*r'
# `bash` started so that it reads no rc file or no BASH_ENV.
builtin declare -gr __aileron_bash_re=$'^bash([[:space:]]+(-[A-Za-z]+|--[a-z-]+|[-+]O[[:space:]]+[a-z_]+))*'\
$'[[:space:]]+(-[A-Za-z]*p[A-Za-z]*|--posix|--norc|-o[[:space:]]+posix)([[:space:]]|$)'
# Shell syntax and builtins that run no program; with an allow list they need no pattern.
builtin declare -gr __aileron_implicit=' [[ [ test true false : echo printf cd pwd read shift local export declare '\
'typeset unset set shopt return exit wait break continue eval source . for case select '

# What the check writes. It looks at them before each use: an attribute the agent set (integer, reference,
# read-only) would turn its own assignments into arithmetic or writes elsewhere, so then it refuses instead.
__aileron_raw= __aileron_cmdraw= __aileron_norm= __aileron_cmd= __aileron_word= __aileron_why= __aileron_rule=
__aileron_ok= __aileron_rest= __aileron_p= __aileron_i=0 __aileron_n=0 __aileron_c= __aileron_d= __aileron_status=
__aileron_warned= __aileron_words=("")

# Free `builtin` from any function of that name (done before every output, as functions appear at any time).
# Status 1, and nothing done, if POSIXLY_CORRECT cannot be assigned: a failed assignment would abandon the trap
# and let the command run, so then a refusal is only the skip.
__aileron_builtins() {
    if [[ -R POSIXLY_CORRECT ]] || [[ $- != *u* && -n ${POSIXLY_CORRECT@a} ]]; then
        [[ -z unsafe ]]
    elif [[ :$SHELLOPTS: == *:posix:* ]]; then
        unset -f builtin
    else
        POSIXLY_CORRECT=y
        unset -f builtin
        unset POSIXLY_CORRECT
    fi
}

# extdebug lets the trap skip a command by its status alone. Set by the first check, not in this file: set in a
# startup file it would make bash look for a debugger, and switch itself off again.
__aileron_extdebug() {
    __aileron_builtins && builtin shopt -s extdebug
}

# Escape a report field for an HTTP header: backslash, newline, CR and tab as \\ \n \r \t, other controls as '?'.
__aileron_escape() {
    __aileron_c=${1:0:$2}
    __aileron_c=${__aileron_c//\\/\\\\}
    __aileron_c=${__aileron_c//$'\n'/\\n}
    __aileron_c=${__aileron_c//$'\r'/\\r}
    __aileron_c=${__aileron_c//$'\t'/\\t}
    __aileron_c=${__aileron_c//[[:cntrl:]]/?}
}

# Report one decision ($1 allow|deny, $2 the rule that decided) to the audit log, through the proxy, over
# bash's own /dev/tcp: no process is started. The proxy answers 204 once the record is in its audit spool.
__aileron_record() {
    __aileron_status=
    if [[ -n $__aileron_proxy_port && -n $__aileron_token ]]; then
        __aileron_escape "$BASH_COMMAND" 2000
        __aileron_d=$__aileron_c
        __aileron_escape "${PWD-}" 512
        {
            builtin printf '%s\r\n' 'POST http://aileron.proxy/shell-audit HTTP/1.1' 'Host: aileron.proxy' \
                "Proxy-Authorization: Bearer $__aileron_token" "X-Aileron-Decision: $1" "X-Aileron-Rule: $2" \
                "X-Aileron-Command: $__aileron_d" "X-Aileron-Cwd: $__aileron_c" 'Content-Length: 0' \
                'Connection: close' '' >&8 &&
                builtin read -r -t 5 __aileron_status <&8
        } 8<>"/dev/tcp/$__aileron_proxy_host/$__aileron_proxy_port"
    fi
    if [[ $__aileron_status != HTTP/1.[01]' 204'* && -z $__aileron_warned ]]; then
        __aileron_warned=1
        builtin printf 'aileron: this command could not be reported to the audit log (no answer from %s)\n' \
            "the proxy at ${__aileron_proxy_host:-?}:${__aileron_proxy_port:-?}" >&9
    fi
}

# Refuse the command: say why, report it ($2: the rule; "" when the check's own variables cannot be trusted to
# build a report), and end a non-interactive shell (exit 126, "cannot execute"), so that a script or `a && b`
# does not go on as if it had run. An interactive shell skips the command instead. Status: 1 (skip: extdebug).
__aileron_refuse() {
    if __aileron_builtins; then
        builtin printf 'aileron: blocked by %s\n' "$1" >&9
        [[ -z $2 ]] || __aileron_record deny "$2"
        if [[ $- != *i* ]]; then
            POSIXLY_CORRECT=y # so that `exit` is the special builtin, whatever function shares its name
            exit 126
        fi
    fi
    [[ -z refused ]]
}

# Whether the check's variables are as it left them: set, no attributes, not references (tested first, as
# expanding a reference could evaluate whatever it points to).
__aileron_intact() {
    [[ ! -R __aileron_raw && ! -R __aileron_cmdraw && ! -R __aileron_norm && ! -R __aileron_cmd &&
        ! -R __aileron_word && ! -R __aileron_why && ! -R __aileron_rule && ! -R __aileron_ok &&
        ! -R __aileron_rest && ! -R __aileron_p && ! -R __aileron_i && ! -R __aileron_n && ! -R __aileron_c &&
        ! -R __aileron_d && ! -R __aileron_status && ! -R __aileron_warned && ! -R __aileron_words &&
        ! -R PWD ]] &&
        [[ -v __aileron_raw && -v __aileron_cmdraw && -v __aileron_norm && -v __aileron_cmd && -v __aileron_word &&
            -v __aileron_why && -v __aileron_rule && -v __aileron_ok && -v __aileron_rest && -v __aileron_p &&
            -v __aileron_i && -v __aileron_n && -v __aileron_c && -v __aileron_d && -v __aileron_status &&
            -v __aileron_warned && -v __aileron_words ]] &&
        [[ -z ${__aileron_raw@a}${__aileron_cmdraw@a}${__aileron_norm@a}${__aileron_cmd@a}${__aileron_word@a} &&
            -z ${__aileron_why@a}${__aileron_rule@a}${__aileron_ok@a}${__aileron_rest@a}${__aileron_p@a} &&
            -z ${__aileron_i@a}${__aileron_n@a}${__aileron_c@a}${__aileron_d@a}${__aileron_status@a} &&
            -z ${__aileron_warned@a} &&
            ${__aileron_words@a} == a ]]
}

# The command as run ($__aileron_cmd, its first word $__aileron_word): without leading NAME=value assignments
# and wrappers (command, builtin, exec, nohup, env), quotes and backslashes removed, the program's folder dropped.
__aileron_parse() {
    __aileron_raw=$BASH_COMMAND __aileron_cmdraw=$BASH_COMMAND __aileron_why= __aileron_rule= __aileron_ok=
    __aileron_rest= __aileron_p= __aileron_i=0 __aileron_n=1 __aileron_words=("")
    while [[ -z $__aileron_why && $__aileron_n == 1 ]]; do
        # (The first word decides whether a regex is needed: it costs more than the rest of the check.)
        __aileron_n=0
        case ${__aileron_cmdraw%%[[:space:]]*} in
        *=*) [[ $__aileron_cmdraw =~ $__aileron_assign_re ]] && __aileron_n=1 ;;
        command | builtin | exec | nohup | env) [[ $__aileron_cmdraw =~ $__aileron_wrapper_re ]] && __aileron_n=1 ;;
        esac
        if [[ $__aileron_n == 1 ]]; then
            __aileron_rest=${BASH_REMATCH[0]}
            if [[ $__aileron_rest =~ $__aileron_env_re ]]; then
                __aileron_why="env would run a program without its environment"
            elif [[ $__aileron_rest =~ $__aileron_execa_re ]]; then
                __aileron_why="exec -a would run a program under another name"
            fi
            __aileron_cmdraw=${__aileron_cmdraw:${#__aileron_rest}}
        fi
    done
    __aileron_norm=${__aileron_raw//[\"\'\\]/}
    __aileron_cmd=${__aileron_cmdraw//[\"\'\\]/}
    __aileron_word=${__aileron_cmd%%[[:space:]]*}
    __aileron_cmd=${__aileron_word##*/}${__aileron_cmd:${#__aileron_word}}
    __aileron_word=${__aileron_word##*/}
}

# The guard: commands that would switch the check off are refused whatever the policy ($__aileron_why says why).
__aileron_guard() {
    if [[ -n $__aileron_why ]]; then
        __aileron_why=$__aileron_why # (not `:`: a function may have that name, and would run unchecked here)
    elif [[ -n $__aileron_broken ]]; then
        __aileron_why=$__aileron_broken
    elif [[ $__aileron_norm == *__aileron* || $__aileron_norm == *POSIXLY_CORRECT* || $__aileron_norm == *BASH_ENV* ||
        $__aileron_norm == *SHELLOPTS* || $__aileron_norm == *BASHOPTS* ]]; then
        __aileron_why="the command touches the mediated shell's own settings"
    elif [[ $__aileron_word == enable ]]; then
        __aileron_why="enable would load or switch off builtins"
    elif [[ $__aileron_word == shopt ]] && [[ $__aileron_cmd == *extdebug* || $__aileron_cmd == *functrace* ||
        $__aileron_cmd == *localvar_inherit* || $__aileron_cmd == *[\$\`]* ]]; then
        __aileron_why="the shell option keeps the command check on"
    elif [[ $__aileron_word == set && $__aileron_cmd =~ $__aileron_set_re ]]; then
        __aileron_why="the shell option keeps the command check on"
    elif [[ $__aileron_word == @(declare|typeset|local|readonly) && $__aileron_cmd =~ $__aileron_dynname_re ]] &&
        [[ $__aileron_cmd =~ $__aileron_attr_re || $__aileron_word == readonly ]]; then
        __aileron_why="attributes on a computed variable name could reach the mediated shell's own variables"
    elif [[ $__aileron_word == @(declare|typeset|local) && $__aileron_cmd =~ $__aileron_nopt_re &&
        ! $__aileron_cmd =~ $__aileron_nameref_re ]]; then
        __aileron_why="a reference to a variable named at run time could reach the mediated shell's own settings"
    elif [[ $__aileron_word == readonly && $__aileron_cmd =~ $__aileron_fopt_re ]] ||
        [[ $__aileron_word == @(declare|typeset) && $__aileron_cmd =~ $__aileron_fopt_re &&
            $__aileron_cmd =~ $__aileron_ropt_re ]]; then
        __aileron_why="a read-only function could hide a builtin from the mediated shell"
    elif [[ $__aileron_word == bash && $__aileron_cmd =~ $__aileron_bash_re ]]; then
        __aileron_why="that bash would start without the mediated shell"
    elif [[ $__aileron_word == trap ]]; then
        __aileron_trap
    fi
}

# trap [-lp] [--] [action] [signal ...]: no signal may be DEBUG, or computed. The action is checked as text
# against the deny patterns now: while a trap runs, bash does not show its commands to the DEBUG trap.
__aileron_trap() {
    __aileron_rest=$__aileron_cmdraw
    __aileron_words=()
    while [[ $__aileron_rest =~ $__aileron_word_re ]]; do
        __aileron_words+=("${BASH_REMATCH[1]}")
        __aileron_rest=${__aileron_rest:${#BASH_REMATCH[0]}}
    done
    __aileron_i=1
    while [[ ${__aileron_words[__aileron_i]-} == -- || ${__aileron_words[__aileron_i]-} =~ ^-[lpP]+$ ]]; do
        __aileron_i=$((__aileron_i + 1))
    done
    __aileron_n=$((${#__aileron_words[@]} - __aileron_i))
    if ((__aileron_n >= 2)); then
        __aileron_p=${__aileron_words[__aileron_i]//[\"\'\\]/}
        for __aileron_rest in "${__aileron_deny[@]}"; do
            [[ -z $__aileron_rule && $__aileron_p == *$__aileron_rest ]] && __aileron_rule="deny:$__aileron_rest"
        done
        if [[ -z $__aileron_rule && ${#__aileron_allow[@]} -gt 0 && -n $__aileron_p && $__aileron_p != - ]]; then
            __aileron_rule=allow-list
        fi
        __aileron_i=$((__aileron_i + 1))
    fi
    while ((__aileron_i < ${#__aileron_words[@]})); do
        __aileron_p=${__aileron_words[__aileron_i]}
        __aileron_rest=${__aileron_p//[\"\'\\]/}
        if [[ $__aileron_p == *[\$\`\*\?\[\{~]* || ${__aileron_rest^^} == DEBUG ]]; then
            __aileron_why="the trap would change the DEBUG trap that checks each command"
        fi
        __aileron_i=$((__aileron_i + 1))
    done
    __aileron_words=("")
}

# The organization's policy: a deny pattern matching the command as written or as run ($__aileron_rule says
# which), or, with an allow list, no allow pattern matching and not shell syntax or a harmless builtin.
__aileron_policy() {
    for __aileron_p in "${__aileron_deny[@]}"; do
        if [[ -z $__aileron_rule ]] && [[ $__aileron_raw == $__aileron_p || $__aileron_cmd == $__aileron_p ]]; then
            __aileron_rule="deny:$__aileron_p"
        fi
    done
    if [[ -z $__aileron_rule && ${#__aileron_allow[@]} -gt 0 ]]; then
        if [[ -z $__aileron_word || $__aileron_implicit == *" $__aileron_word "* || $__aileron_word == '(('* ]]; then
            __aileron_ok=1
        fi
        for __aileron_p in "${__aileron_allow[@]}"; do
            if [[ -z $__aileron_ok ]] && [[ $__aileron_raw == $__aileron_p || $__aileron_cmd == $__aileron_p ]]; then
                __aileron_ok=1
            fi
        done
        [[ -n $__aileron_ok ]] || __aileron_rule=allow-list
    fi
}

# The DEBUG trap. Its status is the verdict, set by the branch taken (never read back from a variable): zero
# runs the command, non-zero skips it (extdebug); a refusal outside an interactive shell has ended the shell.
# Passed unchecked: this file's own commands (read again by --rcfile after /etc/bash.bashrc; it skips its body),
# and commands inside a trap handler, whose $BASH_COMMAND is still this trap's installation.
__aileron_check() {
    if [[ ${BASH_SOURCE[1]-} == "@DIR@/aileron.bashrc" || $BASH_COMMAND == "$__aileron_installed" ]]; then
        [[ -n pass ]]
    elif ! __aileron_intact; then
        __aileron_refuse "the mediated shell: its own variables were changed" ""
    else
        [[ $BASHOPTS == *extdebug* ]] || __aileron_extdebug
        __aileron_parse
        __aileron_guard
        [[ -n $__aileron_why$__aileron_rule ]] || __aileron_policy
        if [[ -n $__aileron_why ]]; then
            __aileron_refuse "the mediated shell: $__aileron_why" "guard:$__aileron_why"
        elif [[ -n $__aileron_rule && $__aileron_mode == enforce && $__aileron_rule == allow-list ]]; then
            __aileron_refuse "your organization's shell policy: the command matches none of its allow patterns" \
                allow-list
        elif [[ -n $__aileron_rule && $__aileron_mode == enforce ]]; then
            __aileron_refuse "your organization's shell policy: ${__aileron_rule#deny:}" "$__aileron_rule"
        elif [[ -n $__aileron_rule || $__aileron_record_allowed == 1 ]]; then
            __aileron_builtins && __aileron_record allow "$__aileron_rule"
            [[ -n pass ]]
        else
            [[ -n pass ]]
        fi
    fi
}

# 5. Switch it on. BASH_ENV carries it into every bash started from here; BASH_COMMAND cannot be shadowed.
builtin declare -grx BASH_ENV="@DIR@/aileron.bashrc"
builtin declare -r BASH_COMMAND BASH_SOURCE BASH_REMATCH
builtin readonly -f __aileron_builtins __aileron_extdebug __aileron_escape __aileron_record __aileron_refuse \
    __aileron_intact __aileron_parse __aileron_guard __aileron_trap __aileron_policy __aileron_check
builtin set -o functrace
builtin declare -gr __aileron_loaded=loaded
builtin declare -gr __aileron_installed="builtin trap '\\__aileron_check 9>&2 2>/dev/null' DEBUG"
builtin trap '\__aileron_check 9>&2 2>/dev/null' DEBUG

fi
"""
