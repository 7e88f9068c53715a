package dev.paywatch.devstack;

import org.elasticsearch.Build;
import org.elasticsearch.ResourceNotFoundException;
import org.elasticsearch.action.bulk.BulkItemResponse;
import org.elasticsearch.action.bulk.BulkRequest;
import org.elasticsearch.action.bulk.BulkResponse;
import org.elasticsearch.action.delete.DeleteRequest;
import org.elasticsearch.action.search.ClearScrollRequest;
import org.elasticsearch.action.search.SearchRequest;
import org.elasticsearch.action.search.SearchResponse;
import org.elasticsearch.action.search.SearchScrollRequest;
import org.elasticsearch.action.support.IndicesOptions;
import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.cluster.ClusterState;
import org.elasticsearch.cluster.ClusterStateUpdateTask;
import org.elasticsearch.cluster.metadata.DataStream;
import org.elasticsearch.cluster.metadata.IndexNameExpressionResolver;
import org.elasticsearch.cluster.metadata.MetadataDataStreamsService;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.Priority;
import org.elasticsearch.common.Strings;
import org.elasticsearch.common.bytes.BytesArray;
import org.elasticsearch.common.io.stream.NamedWriteableRegistry;
import org.elasticsearch.common.regex.Regex;
import org.elasticsearch.common.settings.ClusterSettings;
import org.elasticsearch.common.settings.IndexScopedSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.settings.SettingsFilter;
import org.elasticsearch.core.TimeValue;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.index.Index;
import org.elasticsearch.index.query.QueryBuilder;
import org.elasticsearch.index.query.QueryBuilders;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.search.SearchHit;
import org.elasticsearch.search.builder.SearchSourceBuilder;
import org.elasticsearch.xcontent.XContentBuilder;
import org.elasticsearch.xcontent.XContentParser;
import org.elasticsearch.xcontent.json.JsonXContent;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Predicate;
import java.util.function.Supplier;

/**
 * REST endpoints that a stock distribution gets from modules Elastic does not publish to Maven Central
 * ({@code rest-root}, {@code data-streams}, {@code reindex}). Each one is a thin adapter over the
 * genuine server code that the module would call:
 * <ul>
 *   <li>{@code GET|HEAD /}: node info (the Python 8.x client's {@code info()} / {@code ping()}).</li>
 *   <li>{@code GET|DELETE /_data_stream/{name}}: list/delete via
 *       {@link MetadataDataStreamsService#deleteDataStreams}.</li>
 *   <li>{@code POST /{index}/_delete_by_query}: scroll + bulk delete with seq_no/primary_term
 *       concurrency control, like the reindex module; synchronous only.</li>
 * </ul>
 * Data-stream auto-creation from index templates, bulk, search and aggregations are all server code
 * and need nothing from here.
 */
public class CompatPlugin extends Plugin implements ActionPlugin {
    private final AtomicReference<ClusterService> clusterService = new AtomicReference<>();
    private final ExecutorService worker = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "paywatch-compat-dbq");
        t.setDaemon(true);
        return t;
    });

    @Override
    public Collection<?> createComponents(PluginServices services) {
        clusterService.set(services.clusterService());
        return List.of();
    }

    @Override
    public Collection<RestHandler> getRestHandlers(
        Settings settings,
        NamedWriteableRegistry namedWriteableRegistry,
        RestController restController,
        ClusterSettings clusterSettings,
        IndexScopedSettings indexScopedSettings,
        SettingsFilter settingsFilter,
        IndexNameExpressionResolver indexNameExpressionResolver,
        Supplier<DiscoveryNodes> nodesInCluster,
        Predicate<NodeFeature> clusterSupportsFeature
    ) {
        return List.of(new MainHandler(), new DataStreamHandler(settings), new DeleteByQueryHandler());
    }

    @Override
    public void close() {
        worker.shutdownNow();
    }

    private final class MainHandler extends BaseRestHandler {
        @Override
        public String getName() {
            return "paywatch_main_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
            return channel -> {
                ClusterState state = clusterService.get().state();
                Build build = Build.current();
                XContentBuilder b = channel.newBuilder();
                b.startObject()
                    .field("name", state.nodes().getLocalNode().getName())
                    .field("cluster_name", state.getClusterName().value())
                    .field("cluster_uuid", state.metadata().clusterUUID())
                    .startObject("version")
                    .field("number", build.qualifiedVersion())
                    .field("build_flavor", build.flavor())
                    .field("build_type", build.type().displayName())
                    .field("build_hash", build.hash())
                    .field("build_date", build.date())
                    .field("build_snapshot", build.isSnapshot())
                    .field("lucene_version", org.apache.lucene.util.Version.LATEST.toString())
                    .field("minimum_wire_compatibility_version", build.minWireCompatVersion())
                    .field("minimum_index_compatibility_version", build.minIndexCompatVersion())
                    .endObject()
                    .field("tagline", "You Know, for Search")
                    .endObject();
                if (request.method() == RestRequest.Method.HEAD) {
                    channel.sendResponse(new RestResponse(RestStatus.OK, b.contentType().mediaType(), BytesArray.EMPTY));
                } else {
                    channel.sendResponse(new RestResponse(RestStatus.OK, b));
                }
            };
        }
    }

    private final class DataStreamHandler extends BaseRestHandler {
        private final Settings settings;

        DataStreamHandler(Settings settings) {
            this.settings = settings;
        }

        @Override
        public String getName() {
            return "paywatch_data_stream_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(
                new Route(RestRequest.Method.GET, "/_data_stream"),
                new Route(RestRequest.Method.GET, "/_data_stream/{name}"),
                new Route(RestRequest.Method.DELETE, "/_data_stream/{name}")
            );
        }

        private List<DataStream> matching(ClusterState state, String[] patterns) {
            List<DataStream> out = new ArrayList<>();
            for (DataStream ds : state.metadata().dataStreams().values()) {
                if (patterns.length == 0 || Regex.simpleMatch(patterns, ds.getName())) {
                    out.add(ds);
                }
            }
            out.sort((a, b) -> a.getName().compareTo(b.getName()));
            return out;
        }

        private static boolean hasWildcard(String[] patterns) {
            for (String p : patterns) {
                if (Regex.isSimpleMatchPattern(p) || p.equals("_all")) {
                    return true;
                }
            }
            return patterns.length == 0;
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
            String raw = request.param("name", "*");
            String[] patterns = raw.equals("_all") ? new String[] { "*" } : Strings.splitStringByCommaToArray(raw);
            if (request.method() == RestRequest.Method.GET) {
                return channel -> {
                    ClusterState state = clusterService.get().state();
                    List<DataStream> found = matching(state, patterns);
                    if (found.isEmpty() && hasWildcard(patterns) == false) {
                        channel.sendResponse(new RestResponse(channel, new ResourceNotFoundException("no such index [" + raw + "]")));
                        return;
                    }
                    XContentBuilder b = channel.newBuilder();
                    b.startObject().startArray("data_streams");
                    for (DataStream ds : found) {
                        b.startObject()
                            .field("name", ds.getName())
                            .startObject("timestamp_field")
                            .field("name", "@timestamp")
                            .endObject()
                            .startArray("indices");
                        for (Index index : ds.getIndices()) {
                            b.startObject().field("index_name", index.getName()).field("index_uuid", index.getUUID()).endObject();
                        }
                        b.endArray()
                            .field("generation", ds.getGeneration())
                            .field("status", "GREEN")
                            .field("hidden", ds.isHidden())
                            .field("system", ds.isSystem())
                            .field("replicated", ds.isReplicated())
                            .endObject();
                    }
                    b.endArray().endObject();
                    channel.sendResponse(new RestResponse(RestStatus.OK, b));
                };
            }
            return channel -> clusterService.get()
                .submitUnbatchedStateUpdateTask(
                    "paywatch-delete-data-stream [" + raw + "]",
                    new ClusterStateUpdateTask(Priority.HIGH, TimeValue.timeValueSeconds(30)) {
                        @Override
                        public ClusterState execute(ClusterState current) {
                            List<DataStream> found = matching(current, patterns);
                            if (found.isEmpty()) {
                                if (hasWildcard(patterns)) {
                                    return current;
                                }
                                throw new ResourceNotFoundException("no such index [" + raw + "]");
                            }
                            return MetadataDataStreamsService.deleteDataStreams(current, new LinkedHashSet<>(found), settings);
                        }

                        @Override
                        public void onFailure(Exception e) {
                            try {
                                channel.sendResponse(new RestResponse(channel, e));
                            } catch (IOException io) {
                                e.addSuppressed(io);
                            }
                        }

                        @Override
                        public void clusterStateProcessed(ClusterState oldState, ClusterState newState) {
                            try {
                                XContentBuilder b = channel.newBuilder();
                                b.startObject().field("acknowledged", true).endObject();
                                channel.sendResponse(new RestResponse(RestStatus.OK, b));
                            } catch (IOException e) {
                                onFailure(e);
                            }
                        }
                    }
                );
        }
    }

    private final class DeleteByQueryHandler extends BaseRestHandler {
        @Override
        public String getName() {
            return "paywatch_delete_by_query_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.POST, "/{index}/_delete_by_query"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) throws IOException {
            String[] indices = Strings.splitStringByCommaToArray(request.param("index"));
            boolean refresh = request.paramAsBoolean("refresh", false);
            boolean proceedOnConflict = "proceed".equals(request.param("conflicts", "abort"));
            int batch = request.paramAsInt("scroll_size", 1000);
            if (request.paramAsBoolean("wait_for_completion", true) == false) {
                throw new IllegalArgumentException("paywatch local node: only wait_for_completion=true is supported");
            }
            QueryBuilder query = QueryBuilders.matchAllQuery();
            if (request.hasContentOrSourceParam()) {
                Map<String, Object> body;
                try (XContentParser parser = request.contentOrSourceParamParser()) {
                    body = parser.map();
                }
                Object q = body.get("query");
                if (q != null) {
                    try (XContentBuilder qb = JsonXContent.contentBuilder()) {
                        qb.map(Map.of("q", q));
                        String json = Strings.toString(qb);
                        query = QueryBuilders.wrapperQuery(json.substring(5, json.length() - 1));
                    }
                }
            }
            final QueryBuilder finalQuery = query;
            return channel -> worker.execute(() -> {
                try {
                    channel.sendResponse(run(client, channel.newBuilder(), indices, finalQuery, batch, refresh, proceedOnConflict));
                } catch (Exception e) {
                    try {
                        channel.sendResponse(new RestResponse(channel, e));
                    } catch (IOException io) {
                        // channel is gone; nothing left to tell
                    }
                }
            });
        }

        private RestResponse run(
            NodeClient client,
            XContentBuilder out,
            String[] indices,
            QueryBuilder query,
            int batch,
            boolean refresh,
            boolean proceedOnConflict
        ) throws IOException {
            long start = System.nanoTime();
            long total = 0, deleted = 0, conflicts = 0, batches = 0;
            List<String> failures = new ArrayList<>();
            // make just-indexed docs visible, as the real action sees the latest refresh only
            client.admin().indices().prepareRefresh(indices).get();
            SearchRequest search = new SearchRequest(indices).source(
                new SearchSourceBuilder().query(query).size(batch).fetchSource(false).seqNoAndPrimaryTerm(true).trackTotalHits(true)
            ).scroll(TimeValue.timeValueMinutes(5)).indicesOptions(IndicesOptions.strictExpandOpen());
            SearchResponse page = client.search(search).actionGet();
            String scrollId = null;
            try {
                boolean abort = false;
                while (abort == false) {
                    scrollId = page.getScrollId();
                    SearchHit[] hits = page.getHits().getHits();
                    if (hits.length == 0) {
                        break;
                    }
                    total += hits.length;
                    batches++;
                    BulkRequest bulk = new BulkRequest();
                    for (SearchHit hit : hits) {
                        bulk.add(
                            new DeleteRequest(hit.getIndex(), hit.getId()).setIfSeqNo(hit.getSeqNo()).setIfPrimaryTerm(hit.getPrimaryTerm())
                        );
                    }
                    BulkResponse resp = client.bulk(bulk).actionGet();
                    for (BulkItemResponse item : resp.getItems()) {
                        if (item.isFailed() == false) {
                            deleted++;
                        } else if (item.getFailure().getStatus() == RestStatus.CONFLICT) {
                            conflicts++;
                            if (proceedOnConflict == false) {
                                failures.add(item.getFailureMessage());
                                abort = true;
                            }
                        } else {
                            failures.add(item.getFailureMessage());
                            abort = true;
                        }
                    }
                    page.decRef();
                    page = client.searchScroll(new SearchScrollRequest(scrollId).scroll(TimeValue.timeValueMinutes(5))).actionGet();
                }
            } finally {
                page.decRef();
                if (scrollId != null) {
                    ClearScrollRequest clear = new ClearScrollRequest();
                    clear.addScrollId(scrollId);
                    client.clearScroll(clear).actionGet();
                }
            }
            if (refresh) {
                client.admin().indices().prepareRefresh(indices).get();
            }
            out.startObject()
                .field("took", (System.nanoTime() - start) / 1_000_000)
                .field("timed_out", false)
                .field("total", total)
                .field("deleted", deleted)
                .field("batches", batches)
                .field("version_conflicts", conflicts)
                .field("noops", 0)
                .startObject("retries")
                .field("bulk", 0)
                .field("search", 0)
                .endObject()
                .field("throttled_millis", 0)
                .field("requests_per_second", -1.0)
                .field("throttled_until_millis", 0)
                .startArray("failures");
            for (String f : failures) {
                out.startObject().field("cause", f).endObject();
            }
            out.endArray().endObject();
            RestStatus status = failures.isEmpty() ? RestStatus.OK : (conflicts > 0 ? RestStatus.CONFLICT : RestStatus.INTERNAL_SERVER_ERROR);
            return new RestResponse(status, out);
        }
    }
}
