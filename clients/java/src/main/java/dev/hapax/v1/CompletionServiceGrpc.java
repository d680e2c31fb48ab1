package dev.hapax.v1;

import static io.grpc.MethodDescriptor.generateFullMethodName;

/**
 * <pre>
 * CompletionService answers chat completions through the gateway's configured providers.
 * </pre>
 */
@javax.annotation.Generated(
    value = "by gRPC proto compiler",
    comments = "Source: hapax/v1/completion_service.proto")
@io.grpc.stub.annotations.GrpcGenerated
public final class CompletionServiceGrpc {

  private CompletionServiceGrpc() {}

  public static final String SERVICE_NAME = "hapax.v1.CompletionService";

  // Static method descriptors that strictly reflect the proto.
  private static volatile io.grpc.MethodDescriptor<dev.hapax.v1.CompleteRequest,
      dev.hapax.v1.CompleteResponse> getCompleteMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Complete",
      requestType = dev.hapax.v1.CompleteRequest.class,
      responseType = dev.hapax.v1.CompleteResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.hapax.v1.CompleteRequest,
      dev.hapax.v1.CompleteResponse> getCompleteMethod() {
    io.grpc.MethodDescriptor<dev.hapax.v1.CompleteRequest, dev.hapax.v1.CompleteResponse> getCompleteMethod;
    if ((getCompleteMethod = CompletionServiceGrpc.getCompleteMethod) == null) {
      synchronized (CompletionServiceGrpc.class) {
        if ((getCompleteMethod = CompletionServiceGrpc.getCompleteMethod) == null) {
          CompletionServiceGrpc.getCompleteMethod = getCompleteMethod =
              io.grpc.MethodDescriptor.<dev.hapax.v1.CompleteRequest, dev.hapax.v1.CompleteResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Complete"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.hapax.v1.CompleteRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.hapax.v1.CompleteResponse.getDefaultInstance()))
              .setSchemaDescriptor(new CompletionServiceMethodDescriptorSupplier("Complete"))
              .build();
        }
      }
    }
    return getCompleteMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.hapax.v1.StreamCompleteRequest,
      dev.hapax.v1.StreamCompleteResponse> getStreamCompleteMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "StreamComplete",
      requestType = dev.hapax.v1.StreamCompleteRequest.class,
      responseType = dev.hapax.v1.StreamCompleteResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
  public static io.grpc.MethodDescriptor<dev.hapax.v1.StreamCompleteRequest,
      dev.hapax.v1.StreamCompleteResponse> getStreamCompleteMethod() {
    io.grpc.MethodDescriptor<dev.hapax.v1.StreamCompleteRequest, dev.hapax.v1.StreamCompleteResponse> getStreamCompleteMethod;
    if ((getStreamCompleteMethod = CompletionServiceGrpc.getStreamCompleteMethod) == null) {
      synchronized (CompletionServiceGrpc.class) {
        if ((getStreamCompleteMethod = CompletionServiceGrpc.getStreamCompleteMethod) == null) {
          CompletionServiceGrpc.getStreamCompleteMethod = getStreamCompleteMethod =
              io.grpc.MethodDescriptor.<dev.hapax.v1.StreamCompleteRequest, dev.hapax.v1.StreamCompleteResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "StreamComplete"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.hapax.v1.StreamCompleteRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.hapax.v1.StreamCompleteResponse.getDefaultInstance()))
              .setSchemaDescriptor(new CompletionServiceMethodDescriptorSupplier("StreamComplete"))
              .build();
        }
      }
    }
    return getStreamCompleteMethod;
  }

  /**
   * Creates a new async stub that supports all call types for the service
   */
  public static CompletionServiceStub newStub(io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<CompletionServiceStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<CompletionServiceStub>() {
        @java.lang.Override
        public CompletionServiceStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new CompletionServiceStub(channel, callOptions);
        }
      };
    return CompletionServiceStub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports unary and streaming output calls on the service
   */
  public static CompletionServiceBlockingStub newBlockingStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<CompletionServiceBlockingStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<CompletionServiceBlockingStub>() {
        @java.lang.Override
        public CompletionServiceBlockingStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new CompletionServiceBlockingStub(channel, callOptions);
        }
      };
    return CompletionServiceBlockingStub.newStub(factory, channel);
  }

  /**
   * Creates a new ListenableFuture-style stub that supports unary calls on the service
   */
  public static CompletionServiceFutureStub newFutureStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<CompletionServiceFutureStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<CompletionServiceFutureStub>() {
        @java.lang.Override
        public CompletionServiceFutureStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new CompletionServiceFutureStub(channel, callOptions);
        }
      };
    return CompletionServiceFutureStub.newStub(factory, channel);
  }

  /**
   * <pre>
   * CompletionService answers chat completions through the gateway's configured providers.
   * </pre>
   */
  public static abstract class CompletionServiceImplBase implements io.grpc.BindableService {

    /**
     * <pre>
     * Complete returns one whole completion.
     * </pre>
     */
    public void complete(dev.hapax.v1.CompleteRequest request,
        io.grpc.stub.StreamObserver<dev.hapax.v1.CompleteResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getCompleteMethod(), responseObserver);
    }

    /**
     * <pre>
     * StreamComplete returns a completion as a stream of deltas (answer text, reasoning text,
     * tool-call fragments); the last message carries the finish reason, the usage and what
     * served it.
     * </pre>
     */
    public void streamComplete(dev.hapax.v1.StreamCompleteRequest request,
        io.grpc.stub.StreamObserver<dev.hapax.v1.StreamCompleteResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getStreamCompleteMethod(), responseObserver);
    }

    @java.lang.Override public final io.grpc.ServerServiceDefinition bindService() {
      return io.grpc.ServerServiceDefinition.builder(getServiceDescriptor())
          .addMethod(
            getCompleteMethod(),
            io.grpc.stub.ServerCalls.asyncUnaryCall(
              new MethodHandlers<
                dev.hapax.v1.CompleteRequest,
                dev.hapax.v1.CompleteResponse>(
                  this, METHODID_COMPLETE)))
          .addMethod(
            getStreamCompleteMethod(),
            io.grpc.stub.ServerCalls.asyncServerStreamingCall(
              new MethodHandlers<
                dev.hapax.v1.StreamCompleteRequest,
                dev.hapax.v1.StreamCompleteResponse>(
                  this, METHODID_STREAM_COMPLETE)))
          .build();
    }
  }

  /**
   * <pre>
   * CompletionService answers chat completions through the gateway's configured providers.
   * </pre>
   */
  public static final class CompletionServiceStub extends io.grpc.stub.AbstractAsyncStub<CompletionServiceStub> {
    private CompletionServiceStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected CompletionServiceStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new CompletionServiceStub(channel, callOptions);
    }

    /**
     * <pre>
     * Complete returns one whole completion.
     * </pre>
     */
    public void complete(dev.hapax.v1.CompleteRequest request,
        io.grpc.stub.StreamObserver<dev.hapax.v1.CompleteResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getCompleteMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * StreamComplete returns a completion as a stream of deltas (answer text, reasoning text,
     * tool-call fragments); the last message carries the finish reason, the usage and what
     * served it.
     * </pre>
     */
    public void streamComplete(dev.hapax.v1.StreamCompleteRequest request,
        io.grpc.stub.StreamObserver<dev.hapax.v1.StreamCompleteResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncServerStreamingCall(
          getChannel().newCall(getStreamCompleteMethod(), getCallOptions()), request, responseObserver);
    }
  }

  /**
   * <pre>
   * CompletionService answers chat completions through the gateway's configured providers.
   * </pre>
   */
  public static final class CompletionServiceBlockingStub extends io.grpc.stub.AbstractBlockingStub<CompletionServiceBlockingStub> {
    private CompletionServiceBlockingStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected CompletionServiceBlockingStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new CompletionServiceBlockingStub(channel, callOptions);
    }

    /**
     * <pre>
     * Complete returns one whole completion.
     * </pre>
     */
    public dev.hapax.v1.CompleteResponse complete(dev.hapax.v1.CompleteRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getCompleteMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * StreamComplete returns a completion as a stream of deltas (answer text, reasoning text,
     * tool-call fragments); the last message carries the finish reason, the usage and what
     * served it.
     * </pre>
     */
    public java.util.Iterator<dev.hapax.v1.StreamCompleteResponse> streamComplete(
        dev.hapax.v1.StreamCompleteRequest request) {
      return io.grpc.stub.ClientCalls.blockingServerStreamingCall(
          getChannel(), getStreamCompleteMethod(), getCallOptions(), request);
    }
  }

  /**
   * <pre>
   * CompletionService answers chat completions through the gateway's configured providers.
   * </pre>
   */
  public static final class CompletionServiceFutureStub extends io.grpc.stub.AbstractFutureStub<CompletionServiceFutureStub> {
    private CompletionServiceFutureStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected CompletionServiceFutureStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new CompletionServiceFutureStub(channel, callOptions);
    }

    /**
     * <pre>
     * Complete returns one whole completion.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.hapax.v1.CompleteResponse> complete(
        dev.hapax.v1.CompleteRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getCompleteMethod(), getCallOptions()), request);
    }
  }

  private static final int METHODID_COMPLETE = 0;
  private static final int METHODID_STREAM_COMPLETE = 1;

  private static final class MethodHandlers<Req, Resp> implements
      io.grpc.stub.ServerCalls.UnaryMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ServerStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ClientStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.BidiStreamingMethod<Req, Resp> {
    private final CompletionServiceImplBase serviceImpl;
    private final int methodId;

    MethodHandlers(CompletionServiceImplBase serviceImpl, int methodId) {
      this.serviceImpl = serviceImpl;
      this.methodId = methodId;
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public void invoke(Req request, io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        case METHODID_COMPLETE:
          serviceImpl.complete((dev.hapax.v1.CompleteRequest) request,
              (io.grpc.stub.StreamObserver<dev.hapax.v1.CompleteResponse>) responseObserver);
          break;
        case METHODID_STREAM_COMPLETE:
          serviceImpl.streamComplete((dev.hapax.v1.StreamCompleteRequest) request,
              (io.grpc.stub.StreamObserver<dev.hapax.v1.StreamCompleteResponse>) responseObserver);
          break;
        default:
          throw new AssertionError();
      }
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public io.grpc.stub.StreamObserver<Req> invoke(
        io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        default:
          throw new AssertionError();
      }
    }
  }

  private static abstract class CompletionServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoFileDescriptorSupplier, io.grpc.protobuf.ProtoServiceDescriptorSupplier {
    CompletionServiceBaseDescriptorSupplier() {}

    @java.lang.Override
    public com.google.protobuf.Descriptors.FileDescriptor getFileDescriptor() {
      return dev.hapax.v1.CompletionServiceProto.getDescriptor();
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.ServiceDescriptor getServiceDescriptor() {
      return getFileDescriptor().findServiceByName("CompletionService");
    }
  }

  private static final class CompletionServiceFileDescriptorSupplier
      extends CompletionServiceBaseDescriptorSupplier {
    CompletionServiceFileDescriptorSupplier() {}
  }

  private static final class CompletionServiceMethodDescriptorSupplier
      extends CompletionServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoMethodDescriptorSupplier {
    private final String methodName;

    CompletionServiceMethodDescriptorSupplier(String methodName) {
      this.methodName = methodName;
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.MethodDescriptor getMethodDescriptor() {
      return getServiceDescriptor().findMethodByName(methodName);
    }
  }

  private static volatile io.grpc.ServiceDescriptor serviceDescriptor;

  public static io.grpc.ServiceDescriptor getServiceDescriptor() {
    io.grpc.ServiceDescriptor result = serviceDescriptor;
    if (result == null) {
      synchronized (CompletionServiceGrpc.class) {
        result = serviceDescriptor;
        if (result == null) {
          serviceDescriptor = result = io.grpc.ServiceDescriptor.newBuilder(SERVICE_NAME)
              .setSchemaDescriptor(new CompletionServiceFileDescriptorSupplier())
              .addMethod(getCompleteMethod())
              .addMethod(getStreamCompleteMethod())
              .build();
        }
      }
    }
    return result;
  }
}
