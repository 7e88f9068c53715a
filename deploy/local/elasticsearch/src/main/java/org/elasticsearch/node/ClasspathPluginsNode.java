package org.elasticsearch.node;

import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.MockPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

import java.util.Collection;
import java.util.Collections;

/**
 * A production {@link Node} whose plugins come from the classpath.
 *
 * <p>Why this class lives in {@code org.elasticsearch.node}: the hook that lets the test framework's
 * {@code MockNode} load classpath plugins ({@code NodeConstruction.prepareConstruction} with a
 * {@code NodeServiceProvider}) is package-private. {@code MockNode} itself cannot be used outside a
 * test JVM: building its environment initialises {@code ESTestCase}, which refuses to run as root and
 * randomises ports. Everything else here is the stock service provider, i.e. no mocks.
 */
public class ClasspathPluginsNode extends Node {

    public ClasspathPluginsNode(Settings settings, Collection<Class<? extends Plugin>> classpathPlugins) {
        this(
            InternalSettingsPreparer.prepareEnvironment(settings, Collections.emptyMap(), null, () -> "paywatch-local"),
            classpathPlugins
        );
    }

    private ClasspathPluginsNode(Environment environment, Collection<Class<? extends Plugin>> classpathPlugins) {
        super(NodeConstruction.prepareConstruction(environment, null, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment env, PluginsLoader pluginsLoader) {
                return new MockPluginsService(env.settings(), env, classpathPlugins);
            }
        }, false));
    }
}
