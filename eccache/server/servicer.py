"""The gRPC servicer: converts protobuf messages to domain calls on CacheNode and back. No logic here."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from eccache._proto import eccache_pb2 as pb
from eccache._proto import eccache_pb2_grpc as pb_grpc
from eccache.errors import InvalidArgument
from eccache.server.node import CacheNode
from eccache.types import EntrySpec
from eccache.wire import OUTCOME_TO_PB, info_to_pb, location_to_pb, missing_pb


class ECCacheServicer(pb_grpc.ECCacheServicer):
    def __init__(self, node: CacheNode) -> None:
        self._node = node

    def Lookup(self, request: pb.LookupRequest, context: grpc.ServicerContext) -> pb.LookupResponse:
        results = self._node.lookup(request.namespace, list(request.identifiers))
        return pb.LookupResponse(entries=[
            info_to_pb(r.info, r.state) if r.info else missing_pb(i)
            for i, r in zip(request.identifiers, results)])

    def Reserve(self, request: pb.ReserveRequest, context: grpc.ServicerContext) -> pb.ReserveResponse:
        spec = EntrySpec(namespace=request.namespace, identifier=request.identifier, shape=tuple(request.shape),
                         dtype=request.dtype, nbytes=request.nbytes, metadata=request.metadata,
                         ttl_s=request.ttl_s)
        r = self._node.reserve(spec, request.lease_ms)
        return pb.ReserveResponse(outcome=OUTCOME_TO_PB[r.outcome], lease_id=r.lease_id,
                                  location=location_to_pb(r.location) if r.location else None,
                                  lease_expires_ms=r.lease_expires_ms)

    def Commit(self, request: pb.CommitRequest, context: grpc.ServicerContext) -> pb.CommitResponse:
        self._node.commit(request.namespace, request.identifier, request.lease_id, request.checksum)
        return pb.CommitResponse()

    def Abort(self, request: pb.AbortRequest, context: grpc.ServicerContext) -> pb.AbortResponse:
        self._node.abort(request.namespace, request.identifier, request.lease_id)
        return pb.AbortResponse()

    def Acquire(self, request: pb.AcquireRequest, context: grpc.ServicerContext) -> pb.AcquireResponse:
        acquired = self._node.acquire(request.namespace, list(request.identifiers), request.lease_ms)
        return pb.AcquireResponse(entries=[
            pb.AcquiredEntry(info=info_to_pb(a.info), lease_id=a.lease_id, location=location_to_pb(a.location),
                             lease_expires_ms=a.lease_expires_ms) if a else
            pb.AcquiredEntry(info=missing_pb(i))
            for i, a in zip(request.identifiers, acquired)])

    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseResponse:
        released = self._node.release([(r.namespace, r.identifier, r.lease_id) for r in request.leases])
        return pb.ReleaseResponse(released=released)

    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.DeleteResponse:
        return pb.DeleteResponse(deleted=self._node.delete(request.namespace, list(request.identifiers),
                                                           request.if_checksum))

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        n = self._node
        used, free, largest = n.pool.usage()
        ready, pending = n.pool.counts()
        pc = n.pool.counters()
        c = n.counters
        return pb.StatsResponse(
            pool_id=n.pool_id, node_address=n.node_address, te_session=n.te_session, transports=n.transports,
            pool_bytes=n.pool.nbytes, used_bytes=used, free_bytes=free, largest_free_bytes=largest,
            entries=ready, pending=pending, read_leases=c.read_leases, evictions=pc.evictions,
            expirations=pc.expirations, lookups=c.lookups, hits=c.hits, misses=c.misses, bytes_in=c.bytes_in,
            bytes_out=c.bytes_out)

    def WriteInline(self, request_iterator: Iterator[pb.WriteChunk],
                    context: grpc.ServicerContext) -> pb.WriteResult:
        first = next(request_iterator, None)
        if first is None:
            raise InvalidArgument("empty write stream")

        def data() -> Iterator[bytes]:
            yield first.data
            for chunk in request_iterator:
                yield chunk.data

        nbytes = self._node.write_inline((first.namespace, first.identifier, first.lease_id), data())
        return pb.WriteResult(nbytes=nbytes)

    def ReadInline(self, request: pb.ReadRequest, context: grpc.ServicerContext) -> Iterator[pb.ReadChunk]:
        for data in self._node.read_inline(request.namespace, request.identifier, request.lease_id):
            yield pb.ReadChunk(data=data)

    def SetAlias(self, request: pb.SetAliasRequest, context: grpc.ServicerContext) -> pb.SetAliasResponse:
        self._node.set_alias(request.alias, request.namespace)
        return pb.SetAliasResponse()

    def ResolveAlias(self, request: pb.ResolveAliasRequest,
                     context: grpc.ServicerContext) -> pb.ResolveAliasResponse:
        return pb.ResolveAliasResponse(namespace=self._node.resolve_alias(request.alias) or "")
