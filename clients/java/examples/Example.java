// Calling Hapax from Java with the stubs generated from protos/ (clients/java/src/main/java, by
// `make generate`: package dev.hapax.v1, with com.google.rpc and io.grpc.health.v1). Complete, a
// StreamComplete read to its end, the health service, an API key and a deadline on every call,
// and the decoded error details (ErrorInfo, RetryInfo) of a call that fails.
//
//   javac -nowarn -d build/java -cp "$CP" clients/java/examples/Example.java \
//       $(find clients/java/src/main/java -name '*.java')
//   java -cp "build/java:$CP" Example ADDRESS API_KEY
//
// Builds with plain javac against Debian's jars in /usr/share/java ($CP: libgrpc-java and what
// it needs, as the README's Java section lists; tests/clients/test_java_example.py builds it the
// same way); prints one JSON object, which that test checks.

import com.google.gson.GsonBuilder;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import dev.hapax.v1.CompleteRequest;
import dev.hapax.v1.CompleteResponse;
import dev.hapax.v1.CompletionServiceGrpc;
import dev.hapax.v1.FinishReason;
import dev.hapax.v1.Message;
import dev.hapax.v1.Role;
import dev.hapax.v1.StreamCompleteRequest;
import dev.hapax.v1.StreamCompleteResponse;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

public final class Example {
  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: Example ADDRESS API_KEY");
      System.exit(2);
    }
    String address = args[0];
    String apiKey = args[1];
    ManagedChannel channel = ManagedChannelBuilder.forTarget(address).usePlaintext().build();
    try {
      run(channel, apiKey);
    } catch (StatusRuntimeException e) {
      System.err.println(e);
      System.exit(1);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private static void run(ManagedChannel channel, String apiKey) {
    // Every call: the key, and a deadline of 10 s (a stub's deadline starts when it is made, so
    // each call takes a fresh one).
    Metadata key = new Metadata();
    key.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + apiKey);
    CompletionServiceGrpc.CompletionServiceBlockingStub completions =
        CompletionServiceGrpc.newBlockingStub(channel)
            .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(key));
    HealthGrpc.HealthBlockingStub health =
        HealthGrpc.newBlockingStub(channel)
            .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(key));

    CompleteResponse reply =
        completions
            .withDeadlineAfter(10, TimeUnit.SECONDS)
            .complete(
                CompleteRequest.newBuilder()
                    .addMessages(
                        Message.newBuilder().setRole(Role.ROLE_USER).setContent("hello from Java"))
                    .build());

    StringBuilder text = new StringBuilder();
    int messages = 0;
    FinishReason finish = FinishReason.FINISH_REASON_UNSPECIFIED;
    Iterator<StreamCompleteResponse> stream =
        completions
            .withDeadlineAfter(10, TimeUnit.SECONDS)
            .streamComplete(StreamCompleteRequest.newBuilder().setPrompt("stream to Java").build());
    while (stream.hasNext()) {
      StreamCompleteResponse message = stream.next();
      text.append(message.getDelta());
      messages++;
      finish = message.getFinishReason();
    }

    HealthCheckResponse serving =
        health
            .withDeadlineAfter(10, TimeUnit.SECONDS)
            .check(HealthCheckRequest.newBuilder().setService("hapax.v1.CompletionService").build());

    Map<String, Object> failure = new LinkedHashMap<>();
    try {
      completions
          .withDeadlineAfter(10, TimeUnit.SECONDS)
          .complete(CompleteRequest.newBuilder().setPrompt("one call too many").build());
    } catch (StatusRuntimeException e) {
      failure.put("code", Status.fromThrowable(e).getCode().name());
      com.google.rpc.Status status = StatusProto.fromThrowable(e);
      if (status != null) {
        failure.put("message", status.getMessage());
        for (Any detail : status.getDetailsList()) {
          try {
            if (detail.is(ErrorInfo.class)) {
              ErrorInfo info = detail.unpack(ErrorInfo.class);
              failure.put("reason", info.getReason());
              failure.put("metadata", info.getMetadataMap());
            } else if (detail.is(RetryInfo.class)) {
              RetryInfo retry = detail.unpack(RetryInfo.class);
              failure.put(
                  "retryDelaySeconds",
                  retry.getRetryDelay().getSeconds() + retry.getRetryDelay().getNanos() / 1e9);
            }
          } catch (InvalidProtocolBufferException undecodable) {
            // A detail that does not parse as its type is left out.
          }
        }
      }
    }

    Map<String, Object> complete = new LinkedHashMap<>();
    complete.put("id", reply.getId());
    complete.put("text", reply.getText());
    complete.put("provider", reply.getRoute().getProvider());
    Map<String, Object> streamed = new LinkedHashMap<>();
    streamed.put("text", text.toString());
    streamed.put("messages", messages);
    streamed.put("finishReason", finish.name());
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("complete", complete);
    out.put("stream", streamed);
    out.put("health", serving.getStatus().name());
    out.put("error", failure);
    System.out.println(new GsonBuilder().disableHtmlEscaping().create().toJson(out));
  }
}
