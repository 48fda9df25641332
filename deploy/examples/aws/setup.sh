#!/bin/sh
# The AWS side of deploy/examples/aws/mirror.yaml, with the AWS CLI.
# Replace the account, region, cluster and group names with yours.
set -eu
ACCOUNT=123456789012
REGION=us-east-1
ASG=web-asg
CLUSTER=my-eks-cluster
QUEUE=meshmirror-events

# 1. The event queue, writable by EventBridge only.
QUEUE_URL=$(aws sqs create-queue --region "$REGION" --queue-name "$QUEUE" \
  --attributes '{"MessageRetentionPeriod":"3600","VisibilityTimeout":"60"}' \
  --query QueueUrl --output text)
aws sqs set-queue-attributes --region "$REGION" --queue-url "$QUEUE_URL" \
  --attributes "{\"Policy\":$(jq -c . sqs-queue-policy.json | jq -R .)}"

# 2. The EventBridge rule that feeds it.
aws events put-rule --region "$REGION" --name meshmirror \
  --event-pattern file://eventbridge-rule.json
aws events put-targets --region "$REGION" --rule meshmirror \
  --targets "Id=queue,Arn=arn:aws:sqs:$REGION:$ACCOUNT:$QUEUE"

# 3. The lifecycle hooks meshmirror answers. The heartbeat timeout must be
#    longer than drainSeconds, or name the hook in the mirror's
#    spec.lifecycle.terminateHook; meshmirror then sends heartbeats for it.
#    The default result is what AWS does if meshmirror never answers.
aws autoscaling put-lifecycle-hook --region "$REGION" \
  --auto-scaling-group-name "$ASG" --lifecycle-hook-name meshmirror-drain \
  --lifecycle-transition autoscaling:EC2_INSTANCE_TERMINATING \
  --heartbeat-timeout 300 --default-result CONTINUE
aws autoscaling put-lifecycle-hook --region "$REGION" \
  --auto-scaling-group-name "$ASG" --lifecycle-hook-name meshmirror-ready \
  --lifecycle-transition autoscaling:EC2_INSTANCE_LAUNCHING \
  --heartbeat-timeout 900 --default-result ABANDON

# 4. A role for meshmirror with the least-privilege policy.
aws iam create-policy --policy-name meshmirror --policy-document file://iam-policy.json

# 4a. EKS Pod Identity (recommended): the agent add-on, a role trusted by
#     pods.eks.amazonaws.com, and an association with the service account.
aws iam create-role --role-name meshmirror \
  --assume-role-policy-document file://pod-identity-trust.json
aws iam attach-role-policy --role-name meshmirror \
  --policy-arn "arn:aws:iam::$ACCOUNT:policy/meshmirror"
aws eks create-addon --cluster-name "$CLUSTER" --addon-name eks-pod-identity-agent || true
aws eks create-pod-identity-association --cluster-name "$CLUSTER" \
  --namespace meshmirror-system --service-account meshmirror \
  --role-arn "arn:aws:iam::$ACCOUNT:role/meshmirror"

# 4b. Or IRSA: see irsa-trust.json and irsa-service-account.yaml.

# 5. Run meshmirror with the queue:
echo "meshmirror run --aws-event-queue-url $QUEUE_URL"
