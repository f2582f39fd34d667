//! Tests of the whole parser through its entry points, mostly `parse_line` in both spellings.

use super::*;
use crate::commands::COMMANDS;

/// A compact rendering of a parse result: `call devami.get_ip()`, `shell job_status(jobind=-2)`,
/// `bind d = 'p'`, `help launch_devinstance`, `error: ...`.
fn render(result: Result<Line, Error>) -> String {
    match result {
        Err(e) => format!("error: {e}"),
        Ok(Line::Nothing) => "nothing".into(),
        Ok(Line::Import) => "import".into(),
        Ok(Line::Bind { name, path }) => format!("bind {name} = {}", python_repr(&path)),
        Ok(Line::Help(None)) => "help".into(),
        Ok(Line::Help(Some(spec))) => format!("help {}", spec.name),
        Ok(Line::Command(inv)) => {
            let args: Vec<String> = inv
                .spec
                .args
                .iter()
                .filter_map(|a| inv.args.get(a.name).map(|v| format!("{}={v}", a.name)))
                .collect();
            let spelling = match inv.spelling {
                Spelling::Call => "call",
                Spelling::Shell => "shell",
            };
            let object = inv.object.map(|o| format!("{o}.")).unwrap_or_default();
            format!("{spelling} {object}{}({})", inv.spec.name, args.join(", "))
        }
    }
}

#[track_caller]
fn check(input: &str, expected: &str) {
    assert_eq!(render(parse_line(input)), expected, "input: {input:?}");
}

#[track_caller]
fn check_all(cases: &[(&str, &str)]) {
    for (input, expected) in cases {
        check(input, expected);
    }
}

/// Errors checked by fragments: each must occur in the message.
#[track_caller]
fn check_err(input: &str, fragments: &[&str]) {
    let got = render(parse_line(input));
    assert!(got.starts_with("error: "), "input: {input:?} gave {got}");
    for f in fragments {
        assert!(got.contains(f), "input: {input:?}: {got:?} lacks {f:?}");
    }
}

#[test]
fn guide_lines_in_the_call_form() {
    check_all(&[
        (">>> from develop_blueprint import NeuroCaaSAMI", "import"),
        (
            ">>> devami = NeuroCaaSAMI(\"../path_to_configured_folder\")",
            "bind devami = '../path_to_configured_folder'",
        ),
        (">>> devami.launch_ami()", "call devami.launch_devinstance()"),
        (">>> devami.launch_ami(ami = \"ubuntu18\")", "call devami.launch_devinstance(ami='ubuntu18')"),
        (
            ">>> devami.create_devami(name)",
            "error: `name` is not a literal: write the value itself, e.g. create_devami(\"my-image\")",
        ),
        (
            ">>> devami.update_blueprint(ami_id,message=None)",
            "error: `ami_id` is not a literal: write the value itself, e.g. update_blueprint(\"ami-0123456789abcdef0\")",
        ),
        (">>> devami.terminate_devinstance()", "call devami.terminate_devinstance()"),
        (">>> devami.stop_devinstance()", "call devami.stop_devinstance()"),
        (
            ">>> devami.submit_job_log(submitpath)",
            "error: `submitpath` is not a literal: write the value itself, e.g. submit_job_log(\"test_resources/submit.json\")",
        ),
        (
            ">>> devami.job_status(index)",
            "error: `index` is not a literal: write the value itself, e.g. job_status(-1)",
        ),
        (
            ">>> devami.job_output(index)",
            "error: `index` is not a literal: write the value itself, e.g. job_output(-1)",
        ),
    ]);
}

#[test]
fn guide_lines_with_values_in_both_spellings() {
    check_all(&[
        ("devami.create_devami(\"my-image\")", "call devami.create_devami(name='my-image')"),
        ("create_devami my-image", "shell create_devami(name='my-image')"),
        ("devami.update_blueprint(\"ami-1\",message=None)", "call devami.update_blueprint(ami_id='ami-1')"),
        ("update_blueprint ami-1", "shell update_blueprint(ami_id='ami-1')"),
        ("devami.submit_job_log(\"submit.json\")", "call devami.submit_job(submitpath='submit.json')"),
        ("submit_job_log submit.json", "shell submit_job(submitpath='submit.json')"),
        ("devami.job_status(-2)", "call devami.job_status(jobind=-2)"),
        ("job_status -2", "shell job_status(jobind=-2)"),
        ("devami.job_output(index=-2)", "call devami.job_output(jobind=-2)"),
        ("job_output --index -2", "shell job_output(jobind=-2)"),
        ("launch_ami", "shell launch_devinstance()"),
        ("launch_ami ubuntu18", "shell launch_devinstance(ami='ubuntu18')"),
        ("terminate_devinstance", "shell terminate_devinstance()"),
        ("stop_devinstance", "shell stop_devinstance()"),
    ]);
}

#[test]
fn a_list_argument_takes_the_positional_words_the_rest_need_not() {
    check_all(&[
        ("new_submit a b c", "shell new_submit(dataset=['a', 'b'], config='c')"),
        ("new_submit a c", "shell new_submit(dataset=['a'], config='c')"),
        ("new_submit a b --config c", "shell new_submit(dataset=['a', 'b'], config='c')"),
        ("new_submit --config c a b", "shell new_submit(dataset=['a', 'b'], config='c')"),
        (
            "devami.new_submit([\"a\", \"b\"], \"c\")",
            "call devami.new_submit(dataset=['a', 'b'], config='c')",
        ),
        ("job_output -1 --follow --tail 5", "shell job_output(jobind=-1, follow=True, tail=5)"),
        ("submit_job s.json --parallel 3", "shell submit_job(submitpath='s.json', parallel=3)"),
    ]);
    check_err("new_submit a", &["missing `config`"]);
}

#[test]
fn call_form_variants() {
    check_all(&[
        ("launch_ami(\"ubuntu18\")", "call launch_devinstance(ami='ubuntu18')"),
        (
            "devami.launch_devinstance(ami=\"ubuntu18\", timeout=120)",
            "call devami.launch_devinstance(ami='ubuntu18', timeout=120)",
        ),
        (
            "devami.launch_devinstance('ubuntu18', 200, 30, True)",
            "call devami.launch_devinstance(ami='ubuntu18', volume_size=200, timeout=30, dry_run=True)",
        ),
        (
            "devami.launch_ami(ami=\"ubuntu18\", dataset_size=100, DryRun=True);",
            "call devami.launch_devinstance(ami='ubuntu18', volume_size=100, dry_run=True)",
        ),
        ("x.get_ip()", "call x.get_ip()"),
        ("get_ip ()", "call get_ip()"),
        ("devami.job_status(jobind=-2)", "call devami.job_status(jobind=-2)"),
        ("devami.job_status(- 2)", "call devami.job_status(jobind=-2)"),
        ("devami.job_status(+3)", "call devami.job_status(jobind=3)"),
        ("devami.job_status(-(4))", "call devami.job_status(jobind=-4)"),
        (
            "devami.extend_lifetime(minutes=30, DryRun=False)",
            "call devami.extend_lifetime(additional_time=30, dry_run=False)",
        ),
        ("devami.sleep(2)", "call devami.sleep(seconds=2.0)"),
        ("sleep(0.5)", "call sleep(seconds=0.5)"),
        ("sleep(1e-3)", "call sleep(seconds=0.001)"),
        ("sleep(.25)", "call sleep(seconds=0.25)"),
        ("devami.update_blueprint(None, 'msg')", "call devami.update_blueprint(message='msg')"),
        ("devami.update_blueprint(ami_id=None)", "call devami.update_blueprint()"),
        ("devami.update_blueprint(\n'a',\n)", "call devami.update_blueprint(ami_id='a')"),
        (
            "devami.launch_ami(ami = \"ubuntu18\")  # a comment",
            "call devami.launch_devinstance(ami='ubuntu18')",
        ),
        ("devami.get_ip() ;  ", "call devami.get_ip()"),
        ("... devami.get_ip()", "call devami.get_ip()"),
        ("   >>>   devami.get_ip()", "call devami.get_ip()"),
        ("exec(\"ls -la | wc -l\")", "call exec(command='ls -la | wc -l')"),
        ("exit()", "call exit()"),
        ("quit()", "call exit()"),
        ("devami.status()", "call devami.status()"),
        ("upload(\"a.txt\", key=\"inputs/a.txt\")", "call upload(local='a.txt', key='inputs/a.txt')"),
    ]);
}

#[test]
fn empty_comments_and_imports() {
    check_all(&[
        ("", "nothing"),
        ("   ", "nothing"),
        (">>>", "nothing"),
        (">>> ", "nothing"),
        ("...", "nothing"),
        ("# just a comment", "nothing"),
        (">>> # a comment", "nothing"),
        (";", "nothing"),
        ("import os", "import"),
        ("from develop_blueprint import NeuroCaaSAMI", "import"),
        ("from neurocaas_contrib.remote import NeuroCAASAMI", "import"),
    ]);
}

#[test]
fn string_literals_and_escapes() {
    check_all(&[
        ("create_devami('it\\'s')", "call create_devami(name=\"it's\")"),
        ("create_devami(\"say \\\"hi\\\"\")", "call create_devami(name='say \"hi\"')"),
        ("create_devami(\"a\\tb\\n\")", "call create_devami(name='a\\tb\\n')"),
        ("create_devami(\"\\x41\\u00e9\\U0001F600\\101\\0\")", "call create_devami(name='Aé😀A\\x00')"),
        ("create_devami(r\"a\\nb\")", "call create_devami(name='a\\\\nb')"),
        ("create_devami(R'a\\'b')", "call create_devami(name=\"a\\\\'b\")"),
        ("create_devami(\"a\" 'b'  \"c\")", "call create_devami(name='abc')"),
        ("create_devami(\"\"\"tri\"ple\"\"\")", "call create_devami(name='tri\"ple')"),
        ("create_devami('''a'b''')", "call create_devami(name=\"a'b\")"),
        ("create_devami(u\"x\")", "call create_devami(name='x')"),
        ("create_devami(\"\\q\")", "call create_devami(name='\\\\q')"),
        ("create_devami(\"héllo wörld ✓\")", "call create_devami(name='héllo wörld ✓')"),
        ("create_devami((\"paren\"))", "call create_devami(name='paren')"),
        ("create_devami(\"\")", "call create_devami(name='')"),
    ]);
    check_err("create_devami(b\"x\")", &["bytes literals", "plain string"]);
    check_err("create_devami(f\"x{y}\")", &["f-strings", "not literals"]);
    check_err("create_devami(\"\\N{DASH}\")", &["`\\N{...}` escapes are not supported"]);
    check_err("create_devami(\"\\x4\")", &["invalid `\\x` escape", "e.g. `\\x41`"]);
    check_err("create_devami(\"\\ud800\")", &["invalid `\\u` escape"]);
    check_err("create_devami(\"\\U00110000\")", &["invalid `\\U` escape"]);
}

#[test]
fn number_literals() {
    check_all(&[
        ("job_status(1_000)", "call job_status(jobind=1000)"),
        ("job_status(0x10)", "call job_status(jobind=16)"),
        ("job_status(0o17)", "call job_status(jobind=15)"),
        ("job_status(0b101)", "call job_status(jobind=5)"),
        ("job_status(-9223372036854775808)", "call job_status(jobind=-9223372036854775808)"),
        ("job_status(9223372036854775807)", "call job_status(jobind=9223372036854775807)"),
        ("sleep(1_0.5)", "call sleep(seconds=10.5)"),
    ]);
    check_err("job_status(1__0)", &["invalid number `1__0`"]);
    check_err("job_status(1_)", &["invalid number"]);
    check_err("job_status(12abc)", &["invalid number `12abc`"]);
    check_err("job_status(1.5j)", &["invalid number"]);
    check_err("job_status(0xZZ)", &["invalid number"]);
    check_err("job_status(9223372036854775808)", &["job_status(): integer at column 12 is too large"]);
    check_err("job_status(99999999999999999999999999999999999999999)", &["is too large"]);
    check_err("sleep(1e999)", &["invalid number"]);
}

#[test]
fn type_errors_name_command_argument_and_value() {
    check_all(&[
        (
            "launch_devinstance(timeout='abc')",
            "error: launch_devinstance(): `timeout` expects an integer, got 'abc' (a string)",
        ),
        ("job_status(1.5)", "error: job_status(): `jobind` expects an integer, got 1.5 (a float)"),
        ("job_status(True)", "error: job_status(): `jobind` expects an integer, got True (a boolean)"),
        ("job_status(\"3\")", "error: job_status(): `jobind` expects an integer, got '3' (a string)"),
        (
            "terminate_devinstance(force=\"yes\")",
            "error: terminate_devinstance(): `force` expects True or False, got 'yes' (a string)",
        ),
        ("terminate(1)", "error: terminate(): `force` expects True or False, got 1 (an integer)"),
        ("create_devami(3)", "error: create_devami(): `name` expects a string, got 3 (an integer)"),
        (
            "create_devami([\"a\", \"b\"])",
            "error: create_devami(): `name` expects a string, got ['a', 'b'] (a list)",
        ),
        ("create_devami((\"a\",))", "error: create_devami(): `name` expects a string, got ['a'] (a list)"),
        ("create_devami(())", "error: create_devami(): `name` expects a string, got [] (a list)"),
        ("sleep(\"1\")", "error: sleep(): `seconds` expects a number, got '1' (a string)"),
    ]);
}

#[test]
fn argument_binding_errors() {
    check_all(&[
        (
            "launch_devinstance(foo=1)",
            "error: launch_devinstance() got an unexpected keyword argument 'foo' (expected: ami, volume_size, timeout, dry_run)",
        ),
        ("get_ip(x=1)", "error: get_ip() got an unexpected keyword argument 'x' (it takes no arguments)"),
        ("get_ip(1)", "error: get_ip(): takes no arguments (1 given)"),
        (
            "job_status(1, 2, 3)",
            "error: job_status(): takes at most 2 arguments (jobind, wait) but 3 were given",
        ),
        (
            "launch_ami(timeout=5, \"ubuntu18\")",
            "error: launch_ami(): positional argument `'ubuntu18'` follows keyword argument `timeout`; \
             give it by name too (expected: ami, volume_size, timeout, dry_run)",
        ),
        (
            "launch_ami(\"ubuntu18\", ami=\"x\")",
            "error: launch_ami(): got multiple values for argument 'ami'",
        ),
        ("job_status(index=1, jobind=2)", "error: job_status(): got multiple values for argument 'jobind'"),
        (
            "create_devami()",
            "error: create_devami(): missing required argument 'name' (the name of the new image, unique in \
             the account), e.g. create_devami(\"my-image\")",
        ),
        (
            "extend_lifetime(DryRun=True)",
            "error: extend_lifetime(): missing required argument 'additional_time' (minutes to add to the \
             lifetime), e.g. extend_lifetime(30)",
        ),
        (
            "create_devami(None)",
            "error: create_devami(): missing required argument 'name' (the name of the new image, unique in the account), e.g. create_devami(\"my-image\")",
        ),
        (
            "upload(key=devami)",
            "error: `devami` is not a literal: write the value itself, e.g. upload(key=\"...\")",
        ),
    ]);
    check_err("create_devami(name=)", &["create_devami(): expected a value, found `)`"]);
    check_err("create_devami(name==1)", &["comparisons like `name == ...`"]);
    check_err("create_devami(*args)", &["unpacking are not supported"]);
    check_err("create_devami(**kw)", &["unpacking are not supported"]);
    check_err("create_devami(foo(1, (2)))", &["`foo(...)` is not a literal"]);
    check_err("create_devami(devami.name)", &["`devami.name` is not a literal"]);
    check_err("create_devami([a])", &["`a` is not a literal"]);
    check_err("create_devami(-x)", &["`-x` is not a literal"]);
    check_err("create_devami(-\"x\")", &["`-` applies to numbers only"]);
    check_err("create_devami(\"a\" + \"b\")", &["expected `,` or `)` after an argument, found `+`"]);
    check_err("create_devami(\"a\") status", &["unexpected `status` after the closing `)`"]);
    check_err("get_ip(); get_ip()", &["write one command per line"]);
    check_err("a.b.get_ip()", &["`a.b.get_ip` has more than one `.`"]);
    check_err("create_devami({})", &["expected a value, found `{`"]);
    check_err("create_devami(\"x\" ", &["create_devami(): missing the closing `)`"]);
    check_err("create_devami(", &["missing the closing `)`"]);
    check_err("create_devami([1, 2", &["expected `,` or `]` in a list, found the end of the line"]);
    check_err("create_devami([1, ", &["expected a value, found the end of the line"]);
    check_err("create_devami($)", &["unexpected character `$`"]);
}

#[test]
fn unknown_commands_get_suggestions() {
    check_all(&[
        ("lanch", "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list"),
        (
            "devami.terminate_devinstnce()",
            "error: unknown command `terminate_devinstnce` (did you mean `terminate_devinstance`?); type `help` for the list",
        ),
        (
            "terminate_devinstnce --force",
            "error: unknown command `terminate_devinstnce` (did you mean `terminate_devinstance`?); type `help` for the list",
        ),
        ("frobnicate", "error: unknown command `frobnicate`; type `help` for the list"),
        (
            "devami.launch_ami",
            "error: `devami.launch_ami` needs parentheses in the call form: write `devami.launch_ami()`, or `launch_ami` without the prefix",
        ),
        (
            "NeuroCaaSAMI(\"x\")",
            "error: assign the object to a name: `devami = NeuroCaaSAMI(\"path/to/blueprint\")`",
        ),
    ]);
}

#[test]
fn assignments() {
    check_all(&[
        ("d = NeuroCAASAMI(path=\"p\")", "bind d = 'p'"),
        ("d=develop_blueprint.NeuroCaaSAMI('p');", "bind d = 'p'"),
        ("my_ami = NeuroCaaSAMI(\"blueprints/x y\")", "bind my_ami = 'blueprints/x y'"),
    ]);
    check_err(
        "d = foo(\"p\")",
        &["only `d = NeuroCaaSAMI(\"path/to/blueprint\")` assignments", "`d = foo...`"],
    );
    check_err("d = 5", &["only `d = NeuroCaaSAMI"]);
    check_all(&[
        ("ip = devami.ip", "call devami.get_ip()"),
        (">>> devami.ip", "call devami.get_ip()"),
        ("hist = d.instance_hist  # all of them", "call d.history()"),
    ]);
    check_err("ip = devami.secret", &["`devami.secret` is not an attribute devami knows", "`devami.ip`"]);
    check_err("d = NeuroCaaSAMI", &["only `d = NeuroCaaSAMI"]);
    check_err(
        "d = NeuroCaaSAMI(p)",
        &["`p` is not a literal", "d = NeuroCaaSAMI(\"../path_to_configured_folder\")"],
    );
    check_err("d = NeuroCaaSAMI()", &["NeuroCaaSAMI(): missing required argument 'path'"]);
    check_err("d = NeuroCaaSAMI(\"a\", \"b\")", &["takes 1 argument (path) but 2 were given"]);
    check_err("d = NeuroCaaSAMI(folder=\"a\")", &["unexpected keyword argument 'folder' (expected: path)"]);
    check_err("d = NeuroCaaSAMI(3)", &["`path` expects a string"]);
    check_err("d = NeuroCaaSAMI(\"a\"", &["missing the closing `)`"]);
}

#[test]
fn shell_form() {
    check_all(&[
        (
            "launch_devinstance ubuntu18 --timeout 120",
            "shell launch_devinstance(ami='ubuntu18', timeout=120)",
        ),
        ("launch --volume-size 200 --dry-run", "shell launch_devinstance(volume_size=200, dry_run=True)"),
        ("launch --volume_size=200 --DryRun", "shell launch_devinstance(volume_size=200, dry_run=True)"),
        ("launch --dataset-size 50 --no-dry-run", "shell launch_devinstance(volume_size=50, dry_run=False)"),
        ("launch --volume-size 200 ubuntu18", "shell launch_devinstance(ami='ubuntu18', volume_size=200)"),
        ("launch ubuntu18 1_000", "shell launch_devinstance(ami='ubuntu18', volume_size=1000)"),
        ("terminate_devinstance --force", "shell terminate_devinstance(force=True)"),
        ("terminate --force=false", "shell terminate_devinstance(force=False)"),
        ("terminate --force false", "shell terminate_devinstance(force=False)"),
        ("terminate --no-force", "shell terminate_devinstance(force=False)"),
        ("terminate true", "shell terminate_devinstance(force=True)"),
        ("terminate False", "shell terminate_devinstance(force=False)"),
        ("job_status -2", "shell job_status(jobind=-2)"),
        ("job_status -- -3", "shell job_status(jobind=-3)"),
        ("job_status --jobind -2", "shell job_status(jobind=-2)"),
        ("job_status --index=-3", "shell job_status(jobind=-3)"),
        ("job_status +4", "shell job_status(jobind=4)"),
        ("extend_lifetime 30 --dry-run", "shell extend_lifetime(additional_time=30, dry_run=True)"),
        ("extend_lifetime --dry-run 30", "shell extend_lifetime(additional_time=30, dry_run=True)"),
        ("extend_lifetime --minutes 30", "shell extend_lifetime(additional_time=30)"),
        ("exec ls -la | wc -l", "shell exec(command='ls -la | wc -l')"),
        ("exec   echo \"a b\"  ; x   ", "shell exec(command='echo \"a b\"  ; x')"),
        ("exec echo 'unterminated", "shell exec(command=\"echo 'unterminated\")"),
        ("exec --force", "shell exec(command='--force')"),
        (
            "update_blueprint ami-1 --message \"first image\"",
            "shell update_blueprint(ami_id='ami-1', message='first image')",
        ),
        ("update_blueprint --message m ami-1", "shell update_blueprint(ami_id='ami-1', message='m')"),
        (
            "upload data/video.mp4 inputs/video.mp4",
            "shell upload(local='data/video.mp4', key='inputs/video.mp4')",
        ),
        (
            "download 'my key.txt' \"local file.txt\"",
            "shell download(key='my key.txt', local='local file.txt')",
        ),
        ("create_devami my\\ image", "shell create_devami(name='my image')"),
        ("create_devami \"a\\\"b\\\\c\\$d\\e\"", "shell create_devami(name='a\"b\\\\c$d\\\\e')"),
        ("create_devami 'a\\b'", "shell create_devami(name='a\\\\b')"),
        ("create_devami x''y\"\"z", "shell create_devami(name='xyz')"),
        ("create_devami ''", "shell create_devami(name='')"),
        ("create_devami -- --weird", "shell create_devami(name='--weird')"),
        ("create_devami '--weird'", "shell create_devami(name='--weird')"),
        ("create_devami 'help'", "shell create_devami(name='help')"),
        ("create_devami my-image # a comment", "shell create_devami(name='my-image')"),
        ("create_devami my#image", "shell create_devami(name='my#image')"),
        ("status # a comment", "shell status()"),
        ("status;", "shell status()"),
        ("status ; # done", "shell status()"),
        ("sleep 1.5", "shell sleep(seconds=1.5)"),
        ("sleep 2", "shell sleep(seconds=2.0)"),
        ("ls", "shell ls()"),
        ("ls results/", "shell ls(prefix='results/')"),
        ("assign_instance i-0abc", "shell assign_instance(instance_id='i-0abc')"),
        ("open blueprints/my-analysis", "shell open(path='blueprints/my-analysis')"),
        ("exit", "shell exit()"),
        ("quit", "shell exit()"),
    ]);
}

#[test]
fn shell_form_errors() {
    check_all(&[
        ("job_status abc", "error: job_status: `jobind` expects an integer, got `abc`"),
        (
            "job_status -x",
            "error: job_status: unknown option `-x`: options are written `--name` (expected: --jobind, --wait)",
        ),
        ("job_status 1 2", "error: job_status: `wait` expects True or False, got `2`"),
        ("get_ip extra", "error: get_ip: unexpected argument `extra` (it takes no arguments); usage: get_ip"),
        (
            "extend_lifetime",
            "error: extend_lifetime: missing `additional_time` (minutes to add to the lifetime); usage: \
             extend_lifetime ADDITIONAL_TIME [--dry-run]",
        ),
        (
            "exec",
            "error: exec: missing `command` (the shell command line to run, verbatim (pipes and quotes included)); usage: exec COMMAND...",
        ),
        ("sleep abc", "error: sleep: `seconds` expects a number, got `abc`"),
        ("sleep nan", "error: sleep: `seconds` expects a number, got `nan`"),
        ("sleep inf", "error: sleep: `seconds` expects a number, got `inf`"),
        ("launch --timeout", "error: launch: `--timeout` needs a value (an integer)"),
        ("launch --timeout --dry-run", "error: launch: `--timeout` needs a value (an integer)"),
        ("launch --timeout=abc", "error: launch: `--timeout` expects an integer, got `abc`"),
        ("launch --timeout 1.5", "error: launch: `--timeout` expects an integer, got `1.5`"),
        (
            "launch --bogus",
            "error: launch: unknown option `--bogus` (expected: --ami, --volume-size, --timeout, --dry-run)",
        ),
        ("launch --no-timeout", "error: launch: `--no-timeout` is only for true/false options"),
        ("launch --dry-run=maybe", "error: launch: `--dry-run` expects True or False, got `maybe`"),
        ("launch --no-dry-run=true", "error: launch: `--no-dry-run` takes no value"),
        ("launch --timeout 5 --timeout 6", "error: launch: `timeout` is given twice"),
        ("launch ubuntu18 --ami x", "error: launch: `ami` is given twice"),
        (
            "job_status 99999999999999999999",
            "error: job_status: `jobind`: `99999999999999999999` is too large",
        ),
        (
            "create_devami \"unterminated",
            "error: create_devami: unterminated double quote starting at column 15: add the closing `\"`",
        ),
        (
            "create_devami 'x",
            "error: create_devami: unterminated single quote starting at column 15: add the closing `'`",
        ),
        (
            "create_devami x\\",
            "error: create_devami: the line ends with a `\\`: write `\\\\` for a backslash",
        ),
        (
            "status; jobs",
            "error: status: write one command per line (`;` separates commands only in `devami DIR -c 'CMD; CMD'`)",
        ),
        ("'unterminated", "error: unterminated single quote starting at column 1: add the closing `'`"),
    ]);
}

#[test]
fn help_forms() {
    check_all(&[
        ("help", "help"),
        ("?", "help"),
        ("help()", "help"),
        ("help(None)", "help"),
        ("help launch", "help launch_devinstance"),
        ("? launch_ami", "help launch_devinstance"),
        ("help help", "help help"),
        ("help --help", "help help"),
        ("launch --help", "help launch_devinstance"),
        ("launch -h", "help launch_devinstance"),
        ("launch help", "help launch_devinstance"),
        ("launch ubuntu18 --help", "help launch_devinstance"),
        ("exec --help", "help exec"),
        ("exec -h", "help exec"),
        ("get_ip --help", "help get_ip"),
        ("help(launch_ami)", "help launch_devinstance"),
        ("help(\"launch\")", "help launch_devinstance"),
        ("help(command='stop')", "help stop_devinstance"),
        ("help(devami.launch_ami)", "help launch_devinstance"),
        (">>> help(devami.launch_ami)", "help launch_devinstance"),
        ("devami.launch_ami?", "help launch_devinstance"),
        ("launch?", "help launch_devinstance"),
        ("help status;", "help status"),
        ("help --command stop", "help stop_devinstance"),
        ("help --command=stop", "help stop_devinstance"),
    ]);
    check_all(&[
        ("help lanch", "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list"),
        ("help(lanch)", "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list"),
        (
            "help(\"lanch\")",
            "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list",
        ),
        ("lanch?", "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list"),
        (
            "help launch extra",
            "error: help: takes one command name, not also `extra`; e.g. `help launch_devinstance`",
        ),
        ("help(1)", "error: help(): expected a command name, got 1 (an integer)"),
        ("help(\"a\", \"b\")", "error: help(): takes at most 1 argument (a command name) but 2 were given"),
        ("help(x=1)", "error: help(): got an unexpected keyword argument 'x' (expected: command)"),
    ]);
}

#[test]
fn every_example_parses_to_its_command_in_both_spellings_with_the_same_arguments() {
    for spec in COMMANDS {
        let call = parse_line(spec.example_call);
        let shell = parse_line(spec.example_shell);
        if spec.name == "help" {
            assert!(matches!(call, Ok(Line::Help(Some(_)))), "{}: {:?}", spec.example_call, call);
            assert!(matches!(shell, Ok(Line::Help(Some(_)))), "{}: {:?}", spec.example_shell, shell);
            continue;
        }
        let (Ok(Line::Command(call)), Ok(Line::Command(shell))) = (&call, &shell) else {
            panic!("{}: {call:?} / {shell:?}", spec.name);
        };
        assert_eq!(call.spec.name, spec.name);
        assert_eq!(shell.spec.name, spec.name);
        assert_eq!(call.spelling, Spelling::Call);
        assert_eq!(shell.spelling, Spelling::Shell);
        assert_eq!(call.args, shell.args, "{}: the two examples differ", spec.name);
        // `CMD --help` and `help CMD` for every name and alias.
        for name in std::iter::once(spec.name).chain(spec.aliases.iter().copied()) {
            for line in [format!("{name} --help"), format!("help {name}"), format!("help({name})")] {
                assert_eq!(parse_line(&line).ok(), Some(Line::Help(Some(spec))), "{line}");
            }
            if spec.args.iter().all(|a| !a.required) {
                check(name, &format!("shell {}()", spec.name));
                check(&format!("devami.{name}()"), &format!("call devami.{}()", spec.name));
            }
        }
    }
}

#[test]
fn any_number_of_semicolons_is_a_loop_not_a_recursion() {
    let many = ";".repeat(300_000);
    check(&many, "nothing");
    check(&format!("status {many}"), "shell status()");
    check(&format!("status {many} # done"), "shell status()");
    check_err(&format!("{many}status"), &["write one command per line"]);
    check_err(&format!("status {many} ls"), &["status: write one command per line"]);
}

#[test]
fn the_parentheses_hint_quotes_the_object_safely() {
    let got = render(parse_line("\u{1b}[2J\u{1b}[H.status"));
    assert!(got.contains("needs parentheses") && !got.contains('\u{1b}'), "{got}");
    let long = "o".repeat(100_000);
    let got = render(parse_line(&format!("{long}.status")));
    assert!(got.contains("needs parentheses") && got.len() < 400, "{got}");
}

#[test]
fn hostile_input_gives_errors_not_panics() {
    let mb = 1 << 20;
    let long = "a".repeat(mb);
    check(
        &long,
        &format!(
            "error: unknown command `{}…`; type `help` for the list",
            "a".repeat(crate::error::SHOWN_CHARS)
        ),
    );
    let got = render(parse_line(&format!("create_devami(\"{long}\")")));
    assert_eq!(got.len(), "call create_devami(name='')".len() + mb);
    check_err(&format!("create_devami(\"{long}"), &["unterminated string starting at column 15"]);
    check_err(&format!("create_devami {long}'"), &["unterminated single quote"]);
    check_err(&format!("status {}", "x ".repeat(mb / 2)), &["unexpected argument `x`"]);
    check_err(&format!("create_devami({})", "[".repeat(mb)), &["values are nested too deeply"]);
    check_err(&format!("create_devami({})", "(".repeat(mb)), &["values are nested too deeply"]);
    check_err(&format!("create_devami({})", "-".repeat(mb)), &["values are nested too deeply"]);
    check_err(
        &format!("create_devami(\"a\"{})", " \"a\"".repeat(mb / 4)).replace(")", ""),
        &["missing the closing `)`"],
    );
    check_err(&format!("job_status({})", "1".repeat(mb)), &["is too large"]);
    check_err(&format!("job_status {}", "1".repeat(mb)), &["is too large"]);
    check(&format!("exec {long}"), &format!("shell exec(command='{long}')"));
    assert_eq!(split_commands(&"status;".repeat(mb / 7)).len(), mb / 7);
    let _ = completion_context(&format!("launch {}", "--x ".repeat(mb / 4)));
    // Control characters and binary junk.
    check("\u{0}\u{1}\u{7f}", "error: unknown command `\\u{0}\\u{1}\\u{7f}`; type `help` for the list");
    check("statüs", "error: unknown command `statüs` (did you mean `status`?); type `help` for the list");
    check("create_devami \u{1b}[31m", "shell create_devami(name='\\x1b[31m')");
    check_err("create_devami(\u{1b})", &["unexpected character `\\u{1b}`"]);
    check("create_devami(\"\u{1b}\")", "call create_devami(name='\\x1b')");
    check_err("create_devami(\"a\nb\")", &["unterminated string"]);
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let junk = String::from_utf8_lossy(&junk);
    let _ = parse_line(&junk);
    let _ = split_commands(&junk);
    let _ = completion_context(&junk);
}

/// Every prefix of many tricky lines, in every entry point: no panics.
#[test]
fn no_panics_on_prefixes_and_random_lines() {
    let lines = [
        ">>> devami.launch_ami(ami = \"ubuntu18\", timeout=[1, (2,), -3.5e2], DryRun=True)  # c",
        "d = NeuroCaaSAMI(r'\\x', \"\"\"a\"\"\", b'x', f\"y\")",
        "exec echo \"a\\\"b\" 'c' \\d # e; f",
        "launch --timeout=-1 --no-dry-run -- -x 'é' \"✓\\$\" ;",
        "help(devami.launch_ami); ? launch?",
        "create_devami(\"\\x4\\u12\\U0001F60\\N{x}\\777\\",
    ];
    for line in lines {
        for (i, _) in line.char_indices().chain(std::iter::once((line.len(), ' '))) {
            let prefix = &line[..i];
            let _ = parse_line(prefix);
            let _ = split_commands(prefix);
            let c = completion_context(prefix);
            let _ = c.candidates();
        }
    }
    let alphabet: Vec<char> = "ab_.()[],=-+'\"\\#; \t\n0123456789eExrRbf?é\u{0}".chars().collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..3000 {
        let len = (seed % 24) as usize;
        let mut s = String::new();
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        for prefix in ["", "launch_ami(", "devami.create_devami(", "launch ", "d = NeuroCaaSAMI(", "exec "] {
            let line = format!("{prefix}{s}");
            let _ = parse_line(&line);
            let _ = split_commands(&line);
            let _ = completion_context(&line).candidates();
        }
    }
}

#[test]
fn args_accessors() {
    let Ok(Line::Command(inv)) = parse_line("launch ubuntu18 --timeout 5 --dry-run") else { panic!() };
    assert_eq!(inv.args.str("ami"), Some("ubuntu18"));
    assert_eq!(inv.args.int("timeout"), Some(5));
    assert_eq!(inv.args.float("timeout"), Some(5.0));
    assert_eq!(inv.args.bool("dry_run"), Some(true));
    assert_eq!(inv.args.int("volume_size"), None);
    assert!(!inv.args.is_given("volume_size") && inv.args.is_given("ami"));
    assert_eq!(inv.args.list("ami"), Some(vec!["ubuntu18".to_string()]));
    assert_eq!(inv.args.str("timeout"), None);
    let mut args = Args::default();
    args.set("x", Value::List(vec![Value::Str("a".into()), Value::Str("b".into())]));
    assert_eq!(args.list("x"), Some(vec!["a".to_string(), "b".to_string()]));
    args.set("x", Value::Int(1));
    assert_eq!(args.iter().count(), 1);
    assert_eq!(args.list("x"), None);
}

#[test]
fn values_print_as_python() {
    for (v, repr) in [
        (Value::Str("a'b".into()), "\"a'b\""),
        (Value::Str("a'b\"".into()), "'a\\'b\"'"),
        (Value::Str("\u{7}".into()), "'\\x07'"),
        (Value::Float(1.0), "1.0"),
        (Value::Bool(false), "False"),
        (Value::None, "None"),
        (Value::List(vec![Value::Int(1), Value::Str("x".into())]), "[1, 'x']"),
    ] {
        assert_eq!(v.to_string(), repr);
    }
}

#[test]
fn quoted_words_parse_back_to_themselves() {
    for s in ["my file", "it's", "", "a\"b$c", "--x"] {
        let line = format!("create_devami -- {}", crate::shellquote::when_needed(s));
        check(&line, &format!("shell create_devami(name={})", python_repr(s)));
    }
}
