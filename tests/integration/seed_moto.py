"""Seeds a moto server with what a devami blueprint needs, for the AWS backend's tests.

Usage: seed_moto.py ENDPOINT SPEC_JSON

SPEC_JSON names what to create:
  {"key_name": ..., "key_path": ..., "security_group": ..., "instance_profile": ...,
   "bucket": ..., "ami_name_like": "ubuntu", "parameters": {"/name": "<AMI>" or a literal}}

Creates the key pair (its private key written to key_path with mode 600), the security group,
an IAM role with an instance profile of the same name, the bucket, and SSM parameters (the value
"<AMI>" stands for the chosen image). The image is one of moto's built-in Amazon images, the
first whose name contains ami_name_like. Prints one JSON object: what was created, the caller's
ARN, and the Amazon Linux 2023 parameter moto serves (null if it does not).

Credentials and region come from the arguments, never from the environment or ~/.aws.
"""

import json
import os
import sys

import boto3

AL2023_PARAM = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


def clients(endpoint):
    kw = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIADEVAMITEST000001",
        aws_secret_access_key="devami-test-secret-never-printed",
    )
    names = ("ec2", "s3", "ssm", "sts", "iam")
    return {n: boto3.client(n, **kw) for n in names}


def pick_image(ec2, like):
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    candidates = sorted(
        (i for i in images if like in i.get("Name", "").lower() and i.get("State") == "available"),
        key=lambda i: i["Name"],
    )
    if not candidates:
        raise SystemExit(f"moto serves no available image whose name contains {like!r}")
    return candidates[-1]


def main():
    endpoint, spec = sys.argv[1], json.loads(sys.argv[2])
    c = clients(endpoint)
    ec2, s3, ssm, sts, iam = c["ec2"], c["s3"], c["ssm"], c["sts"], c["iam"]

    image = pick_image(ec2, spec.get("ami_name_like", "ubuntu"))

    key = ec2.create_key_pair(KeyName=spec["key_name"])
    path = spec["key_path"]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key["KeyMaterial"])
    os.chmod(path, 0o600)

    sg = ec2.create_security_group(GroupName=spec["security_group"], Description="devami test group")

    profile = spec["instance_profile"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    iam.create_role(RoleName=profile, AssumeRolePolicyDocument=json.dumps(trust))
    ip = iam.create_instance_profile(InstanceProfileName=profile)["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)

    s3.create_bucket(Bucket=spec["bucket"])

    params = {}
    for name, value in spec.get("parameters", {}).items():
        value = image["ImageId"] if value == "<AMI>" else value
        ssm.put_parameter(Name=name, Value=value, Type="String", DataType="aws:ec2:image")
        params[name] = value

    try:
        al2023 = ssm.get_parameter(Name=AL2023_PARAM)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        al2023 = None

    print(
        json.dumps(
            {
                "ami": image["ImageId"],
                "ami_name": image["Name"],
                "root_device_name": image.get("RootDeviceName"),
                "key_name": spec["key_name"],
                "key_path": path,
                "key_fingerprint": key.get("KeyFingerprint"),
                "security_group": spec["security_group"],
                "security_group_id": sg["GroupId"],
                "instance_profile": profile,
                "instance_profile_arn": ip["Arn"],
                "bucket": spec["bucket"],
                "parameters": params,
                "caller_arn": sts.get_caller_identity()["Arn"],
                "al2023_parameter": AL2023_PARAM,
                "al2023": al2023,
            }
        )
    )


if __name__ == "__main__":
    main()
