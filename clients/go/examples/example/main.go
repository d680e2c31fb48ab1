// Calling Hapax from Go with the stubs generated from protos/ (clients/go/hapax/v1, by
// `make generate`; package github.com/hapax/hapax/gen/go/hapax/v1). Complete, a StreamComplete
// read to its end, the health service, an API key and a deadline on every call, and the
// decoded error details (ErrorInfo, RetryInfo) of a call that fails.
//
//	go run ./clients/go/examples/example ADDRESS API_KEY
//
// Builds with Debian's golang-google-grpc-dev in GOPATH mode (tests/clients/test_examples.py
// shows how); prints one JSON object, which that test checks.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	hapaxv1 "github.com/hapax/hapax/gen/go/hapax/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: example ADDRESS API_KEY")
		os.Exit(2)
	}
	address, apiKey := os.Args[1], os.Args[2]
	conn, err := grpc.Dial(address, grpc.WithInsecure())
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	completions := hapaxv1.NewCompletionServiceClient(conn)
	health := healthpb.NewHealthClient(conn)

	// Every call: the key, and a deadline of 10 s.
	call := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey), cancel
	}

	ctx, cancel := call()
	reply, err := completions.Complete(ctx, &hapaxv1.CompleteRequest{
		Messages: []*hapaxv1.Message{{Role: hapaxv1.Role_ROLE_USER, Content: "hello from Go"}},
	})
	cancel()
	if err != nil {
		fail(err)
	}

	ctx, cancel = call()
	stream, err := completions.StreamComplete(ctx, &hapaxv1.StreamCompleteRequest{Prompt: "stream to Go"})
	if err != nil {
		fail(err)
	}
	text, messages, finish := "", 0, hapaxv1.FinishReason_FINISH_REASON_UNSPECIFIED
	for {
		message, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(err)
		}
		text += message.Delta
		messages++
		finish = message.FinishReason
	}
	cancel()

	ctx, cancel = call()
	serving, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "hapax.v1.CompletionService"})
	cancel()
	if err != nil {
		fail(err)
	}

	failure := map[string]interface{}{}
	ctx, cancel = call()
	_, err = completions.Complete(ctx, &hapaxv1.CompleteRequest{Prompt: "one call too many"})
	cancel()
	if st, ok := status.FromError(err); ok && err != nil {
		failure["code"] = st.Code().String()
		failure["message"] = st.Message()
		for _, detail := range st.Details() {
			switch d := detail.(type) {
			case *errdetails.ErrorInfo:
				failure["reason"] = d.Reason
				failure["metadata"] = d.Metadata
			case *errdetails.RetryInfo:
				failure["retryDelaySeconds"] = d.RetryDelay.AsDuration().Seconds()
			}
		}
	}

	out, _ := json.Marshal(map[string]interface{}{
		"complete": map[string]interface{}{"id": reply.Id, "text": reply.Text, "provider": reply.Route.GetProvider()},
		"stream":   map[string]interface{}{"text": text, "messages": messages, "finishReason": finish.String()},
		"health":   serving.Status.String(),
		"error":    failure,
	})
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
