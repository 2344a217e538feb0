/*
 * OpenSearch 3.x: Node's constructor that takes classpath plugins is protected and takes
 * PluginInfo descriptors (as the test framework's MockNode builds them).
 * (2.x takes the plugin classes: see ../node2/SpillwayNode.java.)
 */

import org.opensearch.Version;
import org.opensearch.env.Environment;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.plugins.PluginInfo;

import java.util.Collection;
import java.util.Collections;
import java.util.stream.Collectors;

final class SpillwayNode extends Node {
    SpillwayNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
        super(
            environment,
            plugins.stream()
                .map(p -> new PluginInfo(p.getName(), "classpath plugin", "NA", Version.CURRENT,
                    Integer.toString(Runtime.version().feature()), p.getName(), null,
                    Collections.emptyList(), false))
                .collect(Collectors.toList()),
            true
        );
    }
}
