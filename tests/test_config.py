"""Config validation: each bad value gets one message naming the key, the value and what is expected."""

from __future__ import annotations

import json

import pytest

from components.bazel_args import bazel_compilation_mode, bazel_fission_modes, bazel_option_values
from components.config import ConfigError, StackConfig, parse_config
from tests.conftest import run_harness
from tests.mock_stack import stack_config


def raw_dev(**overrides: str | None) -> dict[str, str | None]:
    """The dev stack's raw strings (Pulumi.yaml defaults + Pulumi.dev.yaml), with overrides."""
    config, _ = stack_config("dev")
    raw: dict[str, str | None] = {k.split(":", 1)[1]: v for k, v in config.items()}
    raw.update(overrides)
    return raw


def problems(**overrides: str | None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw_dev(**overrides), stack="dev")
    return caught.value.problems


def test_dev_stack_parses_to_the_walkthrough_lab():
    config = parse_config(raw_dev(), stack="dev")
    assert config == StackConfig(
        project="istio-proxy-debug", stack="dev", istio_version="1.17.2", work_dir="/home/labile/istio-testing",
        source_repository="https://github.com/istio/proxy.git",
        builder_image=None, build_envoy=True,
        bazel_build_args="-s --explain=explain.txt --config=debug --fission=no --copt=-gdwarf-5"
                         " --copt=-gpubnames"
                         " --linkopt=-fuse-ld=lld"
                         " --linkopt=-Wl,-z,dead-reloc-in-nonalloc=.debug_addr=0xffffffffffffffff",
        strip_target_binary=True,
        docker_network="router",
        docker_network_subnet="172.18.0.0/16", registry_host="192.168.122.1", registry_port=5000,
        nodes=("192.168.122.55",), ssh_user="root", ssh_private_key=None, namespace="mark", create_namespace=True,
        proxy_memory="512Mi", proxy_memory_limit="4Gi",
        workload="fortio-server", target_node_address="192.168.122.55", target_node_name=None, mode="attach",
        envoy_source="build", prebuilt_base_url="https://storage.googleapis.com/istio-build/proxy",
        envoy_repository=None,
        lldb_server_port=2159, lldb_server_listen_all=False, app_uid=1000,
        placement="host", workspace_storage_class=None, workspace_volume_size="200Gi", code_server_password=None,
        cluster="existing", node_access="ssh", node_network=None, target="sidecar", attach_to=None,
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("registryHost", "192.168.122.300", "expected an IP address or DNS name"),
        ("registryHost", "not a host", "expected an IP address or DNS name"),
        ("dockerNetworkSubnet", "172.18.0.0/33", "CIDR"),
        ("dockerNetworkSubnet", "172.18.0.1/16", "no host bits set"),
        ("dockerNetworkSubnet", "172.18.0.0", "CIDR"),
        ("registryPort", "0", "port from 1 to 65535"),
        ("registryPort", "65536", "port from 1 to 65535"),
        ("registryPort", "five", "port from 1 to 65535"),
        ("lldbServerPort", "1022", "port from 1023 to 49147"),
        ("lldbServerPort", "49148", "accepts only in 1024-49151"),
        ("mode", "debug", "expected attach"),
        ("istioVersion", "1.17", "x.y.z"),
        ("istioVersion", "v1.17.2", "x.y.z"),
        ("workDir", "istio-testing", "absolute"),
        ("workDir", "/home/labile/../istio-testing", "normalised"),
        ("workDir", "/", "other than /"),
        ("nodes", "[]", "expected at least one"),
        ("nodes", '"192.168.122.55"', "list of strings"),
        ("nodes", '["192.168.122.55", "192.168.122.55"]', "each node once"),
        ("nodes", '["192.168.122.555"]', "not valid: 192.168.122.555"),
        ("targetNodeAddress", "192.168.122.56", "expected one of nodes: 192.168.122.55"),
        ("namespace", "Mark", "DNS-1123 label"),
        ("namespace", "mark_1", "DNS-1123 label"),
        ("namespace", "a" * 64, "DNS-1123 label"),
        ("workload", "1fortio", "DNS-1035 label"),
        ("workload", "f" * 53, "at most 52"),
        ("targetNodeName", "Node_1", "DNS-1123 subdomain"),
        ("buildEnvoy", "yes", "true or false"),
        ("stripTargetBinary", "1", "true or false"),
        ("proxyMemory", "512MB", "memory quantity"),
        ("proxyMemoryLimit", "256Mi", "at least proxyMemory (512Mi)"),
        ("lldbServerPort", "15000", "clear of the sidecar's own"),
        ("bazelBuildArgs", "-s --config=debug '", "balanced quotes"),
        ("bazelBuildArgs", "-s --config=release", "debug build"),
        ("bazelBuildArgs", "--config=debug -c opt", "debug build"),
        ("bazelBuildArgs", "-s --config=debug", "expected --fission=no"),
        ("bazelBuildArgs", "-s --config=debug --fission=no --fission=dbg", "expected --fission=no"),
        ("bazelBuildArgs", "-s -c dbg --fission yes", "expected --fission=no"),
        ("appUid", "1337", "other than 1337"),
        ("appUid", "0", "uid from 1"),
        ("sshUser", "Root User", "Unix user name"),
        ("builderImage", "Not An Image", "image reference"),
        ("sourceRepository", "github.com/istio/proxy", "git URL"),
        ("dockerNetwork", "-router", "Docker network name"),
        ("envoySource", "download", "expected prebuilt"),
        ("prebuiltBaseUrl", "ftp://mirror.example/istio-build/proxy", "expected an http(s) URL of a folder"),
        ("prebuiltBaseUrl", "https://storage.googleapis.com/istio-build/proxy?alt=media", "without ? or #"),
        ("prebuiltBaseUrl", "storage.googleapis.com/istio-build/proxy", "expected an http(s) URL"),
        ("prebuiltBaseUrl", "file://srv/istio-build", "file:// and an absolute, normalised folder"),
        ("prebuiltBaseUrl", "file:///srv/../istio-build", "file:// and an absolute, normalised folder"),
        ("envoyRepository", "github.com/envoyproxy/envoy", "git URL of the Envoy repository"),
    ],
)
def test_each_bad_value_gets_one_message_naming_key_value_and_expectation(key, value, expected):
    found = problems(**{key: value})
    assert len(found) == 1, found
    assert found[0].startswith(f"istio-proxy-debug:{key} = ")
    assert value in found[0]
    assert expected in found[0]


@pytest.mark.parametrize("key", ["workDir", "registryHost", "nodes", "mode", "registryPort", "buildEnvoy",
                                 "envoySource", "prebuiltBaseUrl"])
def test_missing_required_key_says_how_to_set_it(key):
    found = problems(**{key: None})
    assert found == [f"istio-proxy-debug:{key} is required: " + found[0].split("is required: ", 1)[1]]
    assert found[0].split("is required: ", 1)[1]


def test_a_new_stack_downloads_envoy_and_the_walkthroughs_dev_stack_builds_it():
    newcomer, _ = stack_config("newcomer", {"workDir": "/home/me/istio", "registryHost": "10.0.0.1",
                                            "nodes": '["10.0.0.2"]'})
    assert parse_config({k.split(":", 1)[1]: v for k, v in newcomer.items()}, stack="newcomer").prebuilt
    assert not parse_config(raw_dev(), stack="dev").prebuilt


def test_the_prebuilt_keys_are_read():
    config = parse_config(raw_dev(envoySource="prebuilt", prebuiltBaseUrl="https://mirror.example/istio/proxy/",
                                  envoyRepository="https://git.example/envoy.git"), stack="dev")
    assert config.prebuilt
    assert config.prebuilt_base_url == "https://mirror.example/istio/proxy", "one URL for one folder"
    assert config.envoy_repository == "https://git.example/envoy.git"
    assert parse_config(raw_dev(prebuiltBaseUrl="file:///srv/istio-build/proxy"), stack="dev").prebuilt_base_url \
        == "file:///srv/istio-build/proxy"


def test_a_file_url_needs_the_host_placement():
    found = problems(placement="cluster", registryPort="30500", codeServerPassword="correct-horse-battery",
                     lldbServerListenAll="true",
                     prebuiltBaseUrl="file:///srv/istio-build/proxy")
    assert found == ['istio-proxy-debug:prebuiltBaseUrl = "file:///srv/istio-build/proxy": expected an http(s) URL '
                     "with placement cluster: the download runs in the cluster, which does not see the developer "
                     "host's folders; serve the folder over http, e.g. from a bucket"]


def test_misspelt_key_is_caught_with_a_suggestion():
    assert problems(registryprot="5000") == [
        "istio-proxy-debug:registryprot is not a setting of this project: did you mean registryPort?"
    ]


def test_all_problems_are_reported_at_once():
    found = problems(registryPort="0", mode="x", namespace="X")
    assert [p.split(" ", 1)[0] for p in found] == [
        "istio-proxy-debug:registryPort", "istio-proxy-debug:namespace", "istio-proxy-debug:mode",
    ]


def test_secret_value_is_never_echoed():
    (found,) = problems(sshPrivateKey="hunter2-not-a-key")
    assert "hunter2" not in found
    assert "<secret>" in found


def test_a_valid_private_key_is_accepted_and_kept_out_of_repr():
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    config = parse_config(raw_dev(sshPrivateKey=key), stack="dev")
    assert config.ssh_private_key == key
    assert "abc" not in repr(config)


def test_derived_defaults_follow_their_sources():
    config = parse_config(raw_dev(istioVersion="1.18.3", nodes='["10.0.0.7", "10.0.0.8"]',
                                  targetNodeAddress=""), stack="dev")
    assert config.builder_image is None, "no guessed tag: the checkout's own pin is read at up"
    assert config.target_node_address == "10.0.0.7"


@pytest.mark.parametrize("version", ["1.16.7", "0.8.0", "1.17", "v1.30.3"])
def test_releases_before_the_oldest_supported_or_malformed_are_refused(version):
    (found,) = problems(istioVersion=version)
    assert found.startswith(
        f'istio-proxy-debug:istioVersion = "{version}": expected a release version x.y.z from 1.17.0')


@pytest.mark.parametrize("version", ["1.17.0", "1.30.3", "1.31.0", "2.0.1"])
def test_any_release_from_the_oldest_on_is_accepted_in_both_modes(version):
    for mode in ("attach", "startup"):
        assert parse_config(raw_dev(istioVersion=version, mode=mode), stack="dev").istio_version == version


@pytest.mark.parametrize("lldb_port", ["5000", "4996"])
def test_the_debugger_ports_must_not_include_the_registry_port(lldb_port):
    (found,) = problems(lldbServerPort=lldb_port)
    assert found.startswith(f'istio-proxy-debug:lldbServerPort = "{lldb_port}": expected the debugger ports')
    assert "not to include registryPort" in found


def test_the_debugger_ports_are_the_platform_port_and_the_next_four():
    ports = parse_config(raw_dev(), stack="dev").debugger_ports
    assert ports.all == (2159, 2160, 2161, 2162, 2163)
    assert ports.lldb_server_args(14) == ["--min-gdbserver-port", "2160", "--max-gdbserver-port", "2164"]
    assert ports.lldb_server_args(20) == ["--gdbserver-port", "2160"]


@pytest.mark.parametrize(
    ("args", "mode"),
    [
        ("-s --explain=explain.txt --config=debug", "dbg"),
        ("-c dbg", "dbg"),
        ("--compilation_mode=opt", "opt"),
        ("--config=debug -c opt", "opt"),
        ("-c opt --config=debug", "dbg"),
        ("", "fastbuild"),
    ],
)
def test_bazel_compilation_mode_takes_the_last_setting(args, mode):
    assert bazel_compilation_mode(args) == mode


def test_the_program_stops_with_the_message_and_no_stack_trace():
    done = run_harness("dev", "registryPort=99999", "namespace=Bad_Name")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert 'istio-proxy-debug:registryPort = "99999": expected an integer port from 1 to 65535' in done.stderr
    assert 'istio-proxy-debug:namespace = "Bad_Name": expected a DNS-1123 label' in done.stderr


def test_bazel_options_are_read_as_bazel_reads_them():
    args = ("-s --copt=-gdwarf-5 --config=debug '--copt=-DNAME=a b' --cxxopt=-std=c++17 --copt -gpubnames"
            " --linkopt=-fuse-ld=lld --linkopt -Wl,-z,now")
    assert bazel_option_values(args, "copt") == ["-gdwarf-5", "-DNAME=a b", "-gpubnames"]
    assert bazel_option_values(args, "linkopt") == ["-fuse-ld=lld", "-Wl,-z,now"]
    assert bazel_option_values("-s --config=debug", "copt") == []


@pytest.mark.parametrize(("args", "split"), [
    ("-s", {"dbg", "opt"}),  # envoy.bazelrc's own
    ("--fission=no", set()),
    ("--fission=opt", {"opt"}),
    ("--fission yes", {"fastbuild", "dbg", "opt"}),
    ("--fission=no --fission=dbg,opt", {"dbg", "opt"}),
])
def test_fission_is_read_as_bazel_reads_it_over_envoy_bazelrc(args, split):
    assert bazel_fission_modes(args) == split


def test_a_debug_build_with_fission_only_for_opt_passes():
    args = "-s --config=debug --fission=opt"
    assert parse_config(raw_dev(bazelBuildArgs=args), stack="dev").bazel_build_args == args


DEAD_RELOC = "--linkopt=-Wl,-z,dead-reloc-in-nonalloc=.debug_addr=0xffffffffffffffff"


@pytest.mark.parametrize("linker", ["", "--linkopt=-fuse-ld=gold", "--linkopt=-fuse-ld=lld --linkopt=-fuse-ld=gold"])
def test_an_lld_only_link_option_without_lld_is_named_before_the_build(linker):
    args = f"-s --config=debug --fission=no {linker} {DEAD_RELOC}"
    assert problems(bazelBuildArgs=args) == [
        f"istio-proxy-debug:bazelBuildArgs = {json.dumps(args)}: --linkopt={DEAD_RELOC.split('=', 1)[1]} is an lld "
        "option: keep --linkopt=-fuse-ld=lld beside it, or drop it"
    ]


@pytest.mark.parametrize("args", [f"-s --config=debug --fission=no --linkopt=-fuse-ld=lld {DEAD_RELOC}",
                                  "-s --config=debug --fission=no --linkopt=-fuse-ld=gold"])
def test_link_options_that_fit_the_linker_pass(args):
    assert parse_config(raw_dev(bazelBuildArgs=args), stack="dev").bazel_build_args == args


def test_lldb_server_takes_any_peer_by_default_only_in_the_cluster_placement():
    cluster = parse_config(raw_dev(placement="cluster", registryPort="30500",
                                   codeServerPassword="correct-horse-battery"), stack="dev")
    assert cluster.lldb_server_listen_all is True
    assert parse_config(raw_dev(), stack="dev").lldb_server_listen_all is False


def test_the_cluster_placement_needs_lldb_server_to_take_any_peer():
    (found,) = problems(placement="cluster", registryPort="30500", codeServerPassword="correct-horse-battery",
                        lldbServerListenAll="false")
    assert found.startswith('istio-proxy-debug:lldbServerListenAll = "false": expected true with placement cluster')
    assert "pulumi config set lldbServerListenAll true" in found


def test_the_target_is_the_sidecar_unless_set():
    assert parse_config(raw_dev(), stack="dev").target == "sidecar"
    for target in ("waypoint", "gateway"):
        assert parse_config(raw_dev(target=target, istioVersion="1.26.0"), stack="dev").target == target


def test_an_unknown_target_names_the_three():
    [problem] = problems(target="ambient")
    assert problem.startswith('istio-proxy-debug:target = "ambient": expected sidecar')
    assert "waypoint" in problem and "gateway" in problem


@pytest.mark.parametrize("target", ["waypoint", "gateway"])
def test_a_gateway_target_before_the_release_that_customizes_gateways_names_that_release(target):
    [problem] = problems(target=target, istioVersion="1.25.5")
    assert f'istio-proxy-debug:target = "{target}": expected sidecar with istioVersion 1.25.5' in problem
    assert "Istio 1.26.0 on" in problem and "set istioVersion 1.26.0 or later" in problem


@pytest.mark.parametrize(("target", "deployment_suffix"), [("waypoint", "-waypoint"), ("gateway", "-gateway-istio")])
def test_a_gateway_targets_pods_keep_their_whole_name_as_hostname(target, deployment_suffix):
    """A Deployment's pod: <deployment>-<up to 10>-<5>, at most 63 characters for the hostname lldb-server
    matches."""
    longest = 63 - len("-0123456789-abcde") - len(deployment_suffix)
    assert parse_config(raw_dev(target=target, istioVersion="1.30.3", workload="w" * longest), stack="dev")
    [problem] = problems(target=target, istioVersion="1.30.3", workload="w" * (longest + 1))
    assert problem.startswith(f'istio-proxy-debug:workload = "{"w" * (longest + 1)}": expected at most {longest}')
    # The sidecar's StatefulSet pod keeps the longer names it always allowed.
    assert parse_config(raw_dev(workload="w" * (longest + 1)), stack="dev").target == "sidecar"
